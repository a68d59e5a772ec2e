"""judge: cut every response into steps, then ask the step judge for the first wrong step of each wrong
response (of every response with `judge.judge_correct`). One output shard per generate shard."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sgpo_data.backends import get_backend
from sgpo_data.config import Recipe
from sgpo_data.judges import JudgeInput, Verdict, get_judge
from sgpo_data.schema import JUDGE_SCHEMA, JudgeStatus
from sgpo_data.segmenters import get_segmenter
from sgpo_data.stages.cache import CallCache, request_key
from sgpo_data.stages.progress import Progress
from sgpo_data.stages.run_folder import StageOutput
from sgpo_data.stats import summarize


def stage_config(recipe: Recipe) -> dict:
    return {"judge": recipe.judge.model_dump()}


def run_judge(recipe: Recipe, out, overwrite: bool = False, progress: Progress | None = None) -> StageOutput:
    progress = progress or Progress()
    cfg = recipe.judge
    segmenter = get_segmenter(cfg.segmenter)  # fail on a bad name before any model loads
    upstream = StageOutput(out, "generate")
    upstream.require_complete()
    num_shards = upstream.manifest()["num_shards"]
    stage = StageOutput(out, "judge")
    stage.start(stage_config(recipe), upstream.output_fingerprint(), num_shards, overwrite)
    pending = [i for i in range(num_shards) if not stage.is_done(i)]
    if pending:
        backend = get_backend(cfg.backend, **cfg.backend_kwargs())
        judge = get_judge(cfg.name, backend=backend, constrained=cfg.constrained,
                          max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
        cache = CallCache(stage.run / "cache" / "calls.sqlite")
        shards = {i: pq.read_table(upstream.part(i)) for i in pending}
        to_judge = sum(int(_selected(t, cfg.judge_correct).sum()) for t in shards.values())
        task = progress.task("judge", total=to_judge)
        for i, table in shards.items():
            stage.write_shard(i, _judge_shard(table, recipe, segmenter, judge, cache, lambda n: progress.advance(task, n)))
        cache.close()
        backend.close()
    stage.finish(summarize(stage.read_parts()))
    return stage


def _selected(table: pa.Table, judge_correct: bool) -> np.ndarray:
    correct = np.array([c is True for c in table["is_correct"].to_pylist()])
    return np.ones(len(correct), bool) if judge_correct else ~correct


def _judge_shard(table: pa.Table, recipe: Recipe, segmenter, judge, cache: CallCache, advance) -> pa.Table:
    steps = [segmenter.split(text) for text in table["response"].to_pylist()]
    selected = _selected(table, recipe.judge.judge_correct)
    problems = table["problem"].to_pylist()
    solutions = table["reference_solution"].to_pylist()
    verdicts: list[Verdict | None] = [None] * table.num_rows
    rows = [int(i) for i in selected.nonzero()[0]]
    for start in range(0, len(rows), recipe.judge.batch_size):
        batch = rows[start : start + recipe.judge.batch_size]
        items = {i: JudgeInput(problems[i], solutions[i], steps[i]) for i in batch}
        keys = {i: request_key(judge=recipe.judge.model_dump(), model=judge.model_name, item=items[i].__dict__) for i in batch}
        for i in batch:
            cached = cache.get(keys[i])
            verdicts[i] = None if cached is None else Verdict(**cached)
        misses = [i for i in batch if verdicts[i] is None]
        for i, verdict in zip(misses, judge.judge([items[i] for i in misses]) if misses else []):
            verdicts[i] = verdict
            if verdict.status != JudgeStatus.ERROR:  # engine failures are not cached: a rerun retries them
                cache.put(keys[i], verdict.__dict__)
        advance(len(batch))
    columns = {
        "steps": steps,
        "first_error_step": [v.first_error_step if v else None for v in verdicts],
        "judge_status": [v.status if v else JudgeStatus.SKIPPED_CORRECT for v in verdicts],
        "judge_model": [judge.model_name if v else None for v in verdicts],
        "judge_raw": [v.raw if v else None for v in verdicts],
    }
    for name, values in columns.items():
        table = table.append_column(JUDGE_SCHEMA.field(name), pa.array(values, JUDGE_SCHEMA.field(name).type))
    return table.select(JUDGE_SCHEMA.names).cast(JUDGE_SCHEMA)
