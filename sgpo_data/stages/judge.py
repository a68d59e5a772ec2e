"""judge: cut every response into steps, then ask the step judge for the first wrong step of each wrong
response (of every response with `judge.judge_correct`). One output shard per generate shard.

The judge requests of every shard stream through one engine, up to `max_in_flight` at once; a shard is written
as soon as its last row is judged. Each judged row is cached on its own, keyed by the judge, its engine and the
item, never by max_in_flight or timeouts. A failed request marks only its row (`judge_status` error, kind and text kept); rows whose
generation failed are not judged (`skipped_no_response`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.backends import BACKENDS, get_backend
from sgpo_data.config import identity
from sgpo_data.judges import JUDGES, JudgeInput, Verdict, get_judge
from sgpo_data.pipeline.cache import CallCache, request_key
from sgpo_data.pipeline.folder import add_counts
from sgpo_data.backends.base import Request
from sgpo_data.pipeline.stage import STAGES, Shard, ShardOutput
from sgpo_data.pipeline.stream import ShardJob, StreamingStage
from sgpo_data.run_reader import StageFiles
from sgpo_data.schema import GENERATE_SCHEMA, JUDGE_FIELDS, JUDGE_SCHEMA, JudgeStatus
from sgpo_data.segmenters import SEGMENTERS, get_segmenter


@STAGES.register("judge")
class JudgeStage(StreamingStage):
    name = "judge"
    upstream = "generate"
    needs = tuple(GENERATE_SCHEMA.names)
    adds = tuple(JUDGE_FIELDS)
    status_column, error_kind_column = "judge_status", "judge_error_kind"

    def check(self) -> None:
        cfg = self.recipe.judge
        JUDGES.check(cfg.name, "judge.name")
        self.judge_options = JUDGES.options(cfg.name, cfg.options, "judge.options")
        get_judge(cfg.name, None, cfg.options)  # a cascade checks its judges' names and options (no engine loads)
        BACKENDS.check(cfg.backend, "judge.backend")
        self.backend_options = BACKENDS.options(cfg.backend, cfg.backend_options, "judge.backend_options")
        SEGMENTERS.check(cfg.segmenter, "judge.segmenter")
        SEGMENTERS.options(cfg.segmenter, cfg.segmenter_options, "judge.segmenter_options")

    def config(self) -> dict:
        judge = identity(self.recipe.judge)  # not max_in_flight
        judge["backend_options"] = identity(self.backend_options)
        return {"judge": judge}

    def plan(self, upstream: StageFiles) -> tuple[list[Shard], str]:
        shards = []
        for i in range(upstream.manifest()["num_shards"]):
            marker = upstream.read_marker(i)
            shards.append(Shard(i, marker["output"], marker["rows"], paths=[upstream.part(i)]))
        return shards, upstream.manifest()["identity"]

    def open(self, run) -> None:
        super().open(run)  # check() has run: the runner calls it first
        cfg = self.recipe.judge
        self.segmenter = get_segmenter(cfg.segmenter, cfg.segmenter_options)
        self.max_in_flight = cfg.max_in_flight
        self._judge = None

    @property
    def judge(self):
        """The judge; its engine loads at the first request (a judge that decides locally never loads one)."""
        if self._judge is None:
            cfg = self.recipe.judge
            self._judge = get_judge(cfg.name, lambda: get_backend(cfg.backend, cfg.model, cfg.backend_options,
                                                                  "judge.backend_options"), cfg.options)
        return self._judge

    def engine(self):
        return self.judge.backend

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()

    def key(self, item: JudgeInput) -> str:
        cfg = self.recipe.judge
        return request_key(judge=cfg.name, options=self.judge_options.model_dump(), backend=cfg.backend,
                           model=cfg.model, backend_options=identity(self.backend_options), item=item.__dict__)

    def job(self, shard: Shard) -> "_JudgeJob":
        return _JudgeJob(self, shard, CallCache(StageFiles(self.run, self.name).cache_path(shard.index)))

    def judge_name(self) -> str | None:
        """The engine judge's model, as loaded, else as configured (the cache answered every row)."""
        cfg = self.recipe.judge
        loaded = self._judge.loaded_model_name() if self._judge is not None else None
        return loaded or cfg.model or _default_name(cfg)

    def statistics(self, table: pa.Table, shard_stats: list[dict]) -> dict:
        found = add_counts(stats.get("errors_found_by", {}) for stats in shard_stats)
        return {**super().statistics(table, shard_stats), "errors_found_by": found}


class _JudgeJob(ShardJob):
    """One shard's rows: cut into steps; the wrong ones (every answered one with judge_correct) are judged."""

    def __init__(self, stage: JudgeStage, shard: Shard, cache: CallCache):
        super().__init__(shard)
        self.stage, self.cache = stage, cache
        self.table = table = shard.load()
        stage.check_input(table, shard.where)
        cfg = stage.recipe.judge
        responses = table["response"].to_pylist()
        self.steps = [stage.segmenter.split(text) if text is not None else [] for text in responses]
        self.answered = pc.fill_null(pc.equal(table["generate_status"], "ok"), False).to_numpy(zero_copy_only=False)
        correct = np.array([c is True for c in table["is_correct"].to_pylist()], dtype=bool)
        selected = self.answered & (True if cfg.judge_correct else ~correct)
        problems, solutions = table["problem"].to_pylist(), table["reference_solution"].to_pylist()
        self.items = {int(i): JudgeInput(problems[i], solutions[i], self.steps[i]) for i in selected.nonzero()[0]}
        self.keys = {i: stage.key(item) for i, item in self.items.items()}
        self.verdicts: dict[int, Verdict] = {}
        for i, key in self.keys.items():
            if (cached := cache.get(key)) is not None:
                self.verdicts[i] = Verdict(**cached)
            elif (local := stage.judge.decide(self.items[i])) is not None:  # e.g. arith: no engine, no cache
                self.verdicts[i] = local

    def requests(self) -> list[Request]:
        judge = self.stage.judge
        requests = []
        for i, item in self.items.items():
            if i not in self.verdicts:
                request = judge.request(item)
                request.tag = i
                requests.append(request)
        return requests

    def take(self, request: Request, result) -> list[Request]:
        i = request.tag
        self.verdicts[i] = verdict = self.stage.judge.verdict(self.items[i], result)
        if verdict.status != JudgeStatus.ERROR:  # a failed request is retried by the next run
            self.cache.put(self.keys[i], verdict.__dict__)
        return []

    def finish(self) -> ShardOutput:
        asked = [v for v in self.verdicts.values() if v.status != JudgeStatus.ERROR and v.prompt_tokens is not None]
        usage = {"requests": len(asked), "prompt_tokens": sum(v.prompt_tokens for v in asked),
                 "completion_tokens": sum(v.completion_tokens or 0 for v in asked)}
        name = self.stage.judge_name()
        found: dict[str, int] = {}
        for v in self.verdicts.values():
            if v.first_error_step is not None and v.first_error_step >= 0:
                found[v.judge or name] = found.get(v.judge or name, 0) + 1
        table = _with_verdicts(self.table, self.steps, self.verdicts, self.answered, name)
        return ShardOutput(table, {"usage": usage, "errors_found_by": found})

    def close(self) -> None:
        self.cache.close()


def _default_name(cfg) -> str | None:
    from sgpo_data.backends.models import resolve_model

    return resolve_model(None)[1] if cfg.backend == "transformers" else None


def _with_verdicts(table: pa.Table, steps, verdicts: dict[int, Verdict], answered, judge_name) -> pa.Table:
    n = table.num_rows
    skipped = [JudgeStatus.SKIPPED_CORRECT if answered[i] else JudgeStatus.SKIPPED_NO_RESPONSE for i in range(n)]
    v = [verdicts.get(i) for i in range(n)]
    columns = {
        "steps": steps,
        "first_error_step": [x.first_error_step if x else None for x in v],
        "judge_status": [x.status if x else skipped[i] for i, x in enumerate(v)],
        "judge_model": [(x.judge or judge_name) if x else None for x in v],
        "judge_raw": [x.raw if x else None for x in v],
        "judge_prompt_tokens": [x.prompt_tokens if x else None for x in v],
        "judge_completion_tokens": [x.completion_tokens if x else None for x in v],
        "judge_error_kind": [x.error_kind if x else None for x in v],
        "judge_error": [x.error if x else None for x in v],
    }
    for name, values in columns.items():
        table = table.append_column(JUDGE_SCHEMA.field(name), pa.array(values, JUDGE_SCHEMA.field(name).type))
    return table.select(JUDGE_SCHEMA.names).cast(JUDGE_SCHEMA)
