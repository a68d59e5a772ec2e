"""score: SGPO rewards from the first-error position, and GRPO/SGPO group advantages, over the whole run.

Rows in error (a failed generate or judge request) take no part: their rts, rewards and advantages are null,
and their group's statistics and advantages are computed over the group's remaining rows (a group left with
one row gets advantage 0). They are counted in the manifest (`rows_in_error`, `groups_with_rows_in_error`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sgpo_data.pipeline.stage import STAGES, Shard, ShardOutput, Stage
from sgpo_data.run_reader import StageFiles
from sgpo_data.schema import JUDGE_SCHEMA, SCORE_FIELDS, SCORE_SCHEMA, error_rows
from sgpo_data.scoring import score_stats, score_table


def load_tokenizer(recipe):
    """The policy's tokenizer, for token-weighted RTS."""
    from transformers import AutoTokenizer

    from sgpo_data.backends.models import resolve_model

    path, _ = resolve_model(recipe.score.tokenizer or recipe.generate.model)
    return AutoTokenizer.from_pretrained(path)


def whole_upstream(upstream: StageFiles) -> tuple[list[Shard], str]:
    """One shard holding every upstream row (score and export need whole groups and the whole batch)."""
    manifest = upstream.manifest()
    return [Shard(0, manifest["output_fingerprint"], manifest["rows"], paths=upstream.parts())], manifest["identity"]


@STAGES.register("score")
class ScoreStage(Stage):
    name = "score"
    upstream = "judge"
    needs = tuple(JUDGE_SCHEMA.names)
    adds = tuple(SCORE_FIELDS)

    def config(self) -> dict:
        return {"score": self.recipe.score.model_dump()}

    def plan(self, upstream: StageFiles) -> tuple[list[Shard], str]:
        return whole_upstream(upstream)

    def process(self, shard: Shard) -> ShardOutput:
        table = shard.load()
        self.check_input(table, shard.where)
        tokenizer = load_tokenizer(self.recipe) if self.recipe.score.rts == "tokens" else None
        failed = error_rows(table)
        order = np.concatenate([np.flatnonzero(~failed), np.flatnonzero(failed)])
        scored = score_table(table.filter(pa.array(~failed)), self.recipe.score, tokenizer)
        unscored = table.filter(pa.array(failed))
        for field in SCORE_FIELDS:
            unscored = unscored.append_column(field, pa.nulls(unscored.num_rows, field.type))
        merged = pa.concat_tables([scored.select(SCORE_SCHEMA.names).cast(SCORE_SCHEMA),
                                   unscored.select(SCORE_SCHEMA.names).cast(SCORE_SCHEMA)])
        out = merged.take(pa.array(np.argsort(order)))  # back to the input's row order
        self.advance(table.num_rows)
        return ShardOutput(out)

    def statistics(self, table: pa.Table, shard_stats: list[dict]) -> dict:
        failed = error_rows(table)
        stats = score_stats(table.filter(pa.array(~failed)))
        groups = set(table.filter(pa.array(failed))["prompt_id"].to_pylist())
        judge_failed = int(np.sum(np.array(table["judge_status"].to_pylist()) == "error"))
        stats.update(rows_in_error=int(failed.sum()), groups_with_rows_in_error=len(groups), judge_errors=judge_failed)
        for stage in ("generate", "judge") if self.run else ():  # what the dataset cost, from the engine stages
            upstream = (StageFiles(self.run, stage).manifest() or {}).get("statistics", {})
            stats.update({f"{stage}_{key}": value for key, value in upstream.get("usage", {}).items()})
            if "errors_found_by" in upstream:
                stats["judge_errors_found_by"] = upstream["errors_found_by"]
        return stats
