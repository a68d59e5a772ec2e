"""generate: G sampled responses per prompt, graded against the reference answer.

Shards are fixed runs of `prompts_per_shard` prompts and engine calls are fixed batches inside a shard, each
seeded from the recipe seed and its prompt ids, so a rerun after a crash reproduces the same rows; finished
calls come from the run's call cache.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from sgpo_data.backends import Backend, Completion, SamplingParams, get_backend
from sgpo_data.config import Recipe
from sgpo_data.data import load_prompts
from sgpo_data.graders import get_grader
from sgpo_data.schema import GENERATE_SCHEMA
from sgpo_data.stages.cache import CallCache, request_key
from sgpo_data.stages.progress import Progress
from sgpo_data.stages.run_folder import StageOutput, fingerprint_table
from sgpo_data.stats import summarize


def batch_seed(seed: int, prompt_ids: list[str]) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{'|'.join(prompt_ids)}".encode()).digest()[:4], "little")


def conversation(recipe: Recipe, problem: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": recipe.generate.system_prompt}] if recipe.generate.system_prompt else []
    return messages + [{"role": "user", "content": recipe.generate.prompt_template.replace("{problem}", problem)}]


def recorded_recipe(config: dict | None) -> Recipe:
    """The recipe sections a generate stage recorded in its manifest config (defaults where absent)."""
    return Recipe.model_validate({k: v for k, v in (config or {}).items() if k in ("data", "generate", "grader")})


def stage_config(recipe: Recipe) -> dict:
    return {
        "data": recipe.data.model_dump(),
        "generate": recipe.generate.model_dump(),
        "grader": recipe.grader.model_dump(),
    }


def run_generate(recipe: Recipe, out, overwrite: bool = False, progress: Progress | None = None) -> StageOutput:
    progress = progress or Progress()
    prompts = load_prompts(recipe.data)
    per_shard = recipe.generate.prompts_per_shard
    num_shards = -(-prompts.num_rows // per_shard)
    stage = StageOutput(out, "generate")
    stage.start(stage_config(recipe), fingerprint_table(prompts), num_shards, overwrite)
    pending = [i for i in range(num_shards) if not stage.is_done(i)]
    if pending:
        G = recipe.generate.sampling.num_samples
        backend = get_backend(recipe.generate.backend, **recipe.generate.backend_kwargs())
        cache = CallCache(stage.run / "cache" / "calls.sqlite")
        task = progress.task("generate", total=len(pending) * per_shard * G)
        with get_grader(recipe.grader.name, **recipe.grader.model_dump(exclude={"name"})) as grader:
            for shard in pending:
                rows = prompts.slice(shard * per_shard, per_shard).to_pylist()
                table = _generate_shard(recipe, rows, backend, cache, lambda n: progress.advance(task, n))
                table = _grade(table, grader)
                stage.write_shard(shard, table)
        cache.close()
        backend.close()
    stage.finish(summarize(stage.read_parts()))
    return stage


def _generate_shard(recipe: Recipe, rows: list[dict], backend: Backend, cache: CallCache, advance) -> pa.Table:
    sampling = recipe.generate.sampling
    per_call = max(1, recipe.generate.batch_size // sampling.num_samples)
    out: list[dict] = []
    for start in range(0, len(rows), per_call):
        batch = rows[start : start + per_call]
        conversations = [conversation(recipe, row["problem"]) for row in batch]
        params = SamplingParams(
            n=sampling.num_samples,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            seed=batch_seed(sampling.seed, [row["prompt_id"] for row in batch]),
        )
        key = request_key(
            backend=recipe.generate.backend, model=backend.model_name, conversations=conversations, params=params.to_dict()
        )
        cached = cache.get(key)
        if cached is None:
            groups = backend.generate(conversations, params)
            cache.put(key, [[c.to_dict() for c in group] for group in groups])
        else:
            groups = [[Completion(**c) for c in group] for group in cached]
        for row, group in zip(batch, groups):
            for idx, completion in enumerate(group):
                out.append(
                    {
                        **row,
                        "sample_idx": idx,
                        "response": completion.text,
                        "finish_reason": completion.finish_reason,
                        "policy_model": backend.model_name,
                        "response_tokens": completion.num_tokens,
                        "response_logprobs": completion.logprobs,
                        "response_token_ids": completion.token_ids,
                    }
                )
        advance(len(batch) * sampling.num_samples)
    return pa.Table.from_pylist(out)


def _grade(table: pa.Table, grader) -> pa.Table:
    results = grader.grade(table["response"].to_pylist(), table["reference_answer"].to_pylist())
    columns = {
        "pred_answer": [r.pred_answer for r in results],
        "is_correct": [r.is_correct for r in results],
        "grade_status": [r.status for r in results],
    }
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values, GENERATE_SCHEMA.field(name).type))
    return table.select(GENERATE_SCHEMA.names).cast(GENERATE_SCHEMA)
