"""score: SGPO rewards from the first-error position, and GRPO/SGPO group advantages, over the whole run."""

from __future__ import annotations

from sgpo_data.config import Recipe
from sgpo_data.scoring import score_stats, score_table
from sgpo_data.stages.progress import Progress
from sgpo_data.stages.run_folder import StageOutput


def load_tokenizer(recipe: Recipe):
    """The policy's tokenizer, for token-weighted RTS."""
    from transformers import AutoTokenizer

    from sgpo_data.backends.models import resolve_model

    path, _ = resolve_model(recipe.score.tokenizer or recipe.generate.model)
    return AutoTokenizer.from_pretrained(path)


def run_score(recipe: Recipe, out, overwrite: bool = False, progress: Progress | None = None) -> StageOutput:
    upstream = StageOutput(out, "judge")
    upstream.require_complete()
    stage = StageOutput(out, "score")
    stage.start({"score": recipe.score.model_dump()}, upstream.output_fingerprint(), 1, overwrite)
    if not stage.is_done(0):
        tokenizer = load_tokenizer(recipe) if recipe.score.rts == "tokens" else None
        stage.write_shard(0, score_table(upstream.read(), recipe.score, tokenizer))
    stage.finish(score_stats(stage.read_parts()))
    return stage
