"""judge: cut every response into steps, then ask the step judge for the first wrong step of the responses in
`judge.scope` (the wrong ones; the wrong ones of all-negative groups; every answered one). One output shard per
generate shard.

Local judges (arith, labels, prm) decide on the spot. The engine work of every shard (one request per row, one
per group, or a few rounds per row for mc) streams through one engine, up to `max_in_flight` at once; a shard is
written as soon as its last row is judged. Each judged row is cached on its own, keyed by the judge, its engines
and the item (in group mode, with its group), never by max_in_flight or timeouts. A failed request marks only its
rows (`judge_status` error, kind and text kept); rows whose generation failed are not judged
(`skipped_no_response`). Each row records its cost: engine calls, tokens and seconds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.backends import BACKENDS
from sgpo_data.config import identity
from sgpo_data.errors import SgpoError
from sgpo_data.judges import JUDGES, JudgeInput, Verdict, get_judge, judge_for
from sgpo_data.judges.base import Sessions, in_scope
from sgpo_data.prompts import conversation
from sgpo_data.pipeline.cache import CallCache, request_key
from sgpo_data.pipeline.folder import add_counts
from sgpo_data.backends.base import Request
from sgpo_data.pipeline.stage import STAGES, Shard, ShardOutput, shard_per_part
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
        return shard_per_part(upstream), upstream.manifest()["identity"]

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
            self._judge = judge_for(self.recipe)
        return self._judge

    def engine(self):
        return self.judge.backend

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()

    def key(self, item: JudgeInput, group: list[JudgeInput] | None = None) -> str:
        """A row's cache key; in group mode the verdict also depends on the rows judged with it."""
        cfg, policy = self.recipe.judge, self.recipe.generate
        return request_key(judge=cfg.name, options=self.judge_options.model_dump(), judge_identity=self.judge.identity(),
                           backend=cfg.backend, model=cfg.model, backend_options=identity(self.backend_options),
                           policy=[policy.backend, policy.model], item=item.identity(),
                           group=[other.identity() for other in group] if group is not None else None)

    def job(self, shard: Shard) -> "_JudgeJob":
        return _JudgeJob(self, shard, CallCache(StageFiles(self.run, self.name).cache_path(shard.index)))

    def judge_name(self) -> str | None:
        """The engine judge's model, as loaded, else as configured (the cache answered every row)."""
        cfg = self.recipe.judge
        loaded = self._judge.loaded_model_name() if self._judge is not None else None
        return loaded or cfg.model or _default_name(cfg)

    def statistics(self, shard_stats: list[dict]) -> dict:
        found = add_counts(stats.get("errors_found_by", {}) for stats in shard_stats)
        return {**super().statistics(shard_stats), "errors_found_by": found}


class _JudgeJob(ShardJob):
    """One shard's rows: cut into steps; those in scope are judged, locally or through the engine."""

    def __init__(self, stage: JudgeStage, shard: Shard, cache: CallCache):
        super().__init__(shard)
        self.stage, self.cache = stage, cache
        self.table = table = shard.load()
        stage.check_input(table, shard.where)
        judge = stage.judge
        missing = [c for c in judge.columns if c not in table.column_names]
        if missing:
            raise SgpoError(f"judge {stage.recipe.judge.name}: {shard.where} has no column {missing[0]!r} to read "
                            f"labels from; columns: {', '.join(table.column_names)}; set judge.options.column")
        self.steps_column = stage.segmenter.split_many(table["response"])
        self.steps = self.steps_column.to_pylist()
        self.answered = pc.fill_null(pc.equal(table["generate_status"], "ok"), False).to_numpy(zero_copy_only=False)
        graded = table["is_correct"].to_pylist()
        correct = np.array([c is True for c in graded], dtype=bool)
        self.wrong = np.array([c is False for c in graded], dtype=bool)
        self.groups = table["prompt_id"].to_pylist()
        self.selected = in_scope(stage.recipe.judge.scope, self.answered, correct, self.groups)
        self.items = _items(table, self.steps, self.selected, judge.columns, stage.recipe.generate)
        self.members: dict[str, list[int]] = {}
        for i in self.items:
            self.members.setdefault(self.groups[i], []).append(i)
        self.keys: dict[int, str] = {}
        self.verdicts: dict[int, Verdict] = {}
        # A judge that caches its local decisions (prm) looks them up first; any other judge's cache holds engine
        # verdicts only, so the rows it decides locally (arith, labels) need no cache key.
        if judge.caches_decisions:
            self._look_up(list(self.items))
        left = [i for i in self.items if i not in self.verdicts]
        for i, local in zip(left, judge.decide_many([self.items[i] for i in left])):  # arith, labels, prm: no engine
            if local is not None:
                self.verdicts[i] = local
                if judge.caches_decisions and local.status != JudgeStatus.ERROR:
                    cache.put(self.keys[i], local.__dict__)
        self._look_up([i for i in self.items if i not in self.verdicts and i not in self.keys])
        asked = {i: self.items[i] for i in self.items if i not in self.verdicts}
        self.sessions = Sessions(judge.tasks(asked, {i: self.groups[i] for i in asked}))

    def _look_up(self, rows: list[int]) -> None:
        """The rows' cache keys, and their cached verdicts."""
        grouped = self.stage.judge.grouped
        for i in rows:
            group = [self.items[j] for j in self.members[self.groups[i]]] if grouped else None
            self.keys[i] = self.stage.key(self.items[i], group)
            if (cached := self.cache.get(self.keys[i])) is not None:
                self.verdicts[i] = Verdict(**cached)

    def requests(self) -> list[Request]:
        requests = self.sessions.start()
        self._collect()  # sessions that decided without asking (mc: a right answer, a one-step response)
        return requests

    def take(self, request: Request, result) -> list[Request]:
        follow_ups = self.sessions.take(request, result)
        self._collect()
        return follow_ups

    def _collect(self) -> None:
        """Record the verdicts of finished tasks; cache them unless a request failed (the next run retries)."""
        for i, verdict in self.sessions.finished():
            self.verdicts[i] = verdict
            if verdict.status != JudgeStatus.ERROR:
                self.cache.put(self.keys[i], verdict.__dict__)

    def finish(self) -> ShardOutput:
        engine = [v for v in self.verdicts.values() if v.status != JudgeStatus.ERROR and v.prompt_tokens is not None]
        usage = {"requests": _requests(self.verdicts, self.groups) if self.stage.judge.grouped
                 else sum(v.calls for v in engine),
                 "prompt_tokens": sum(v.prompt_tokens for v in engine),
                 "completion_tokens": sum(v.completion_tokens or 0 for v in engine),
                 "request_seconds": round(sum(v.seconds for v in self.verdicts.values()), 3)}
        name = self.stage.judge_name()
        found: dict[str, int] = {}
        for v in self.verdicts.values():
            if v.first_error_step is not None and v.first_error_step >= 0:
                found[v.judge or name] = found.get(v.judge or name, 0) + 1
        skipped = np.where(self.answered, JudgeStatus.SKIPPED_CORRECT, JudgeStatus.SKIPPED_NO_RESPONSE)
        skipped[self.answered & ~self.selected & self.wrong] = JudgeStatus.SKIPPED_SCOPE
        table = _with_verdicts(self.table, self.steps_column, self.verdicts, skipped, name)
        return ShardOutput(table, {"usage": usage, "errors_found_by": found})

    def close(self) -> None:
        self.cache.close()


def _items(table: pa.Table, steps, selected: np.ndarray, columns: tuple[str, ...], generate) -> dict[int, JudgeInput]:
    problems, solutions = table["problem"].to_pylist(), table["reference_solution"].to_pylist()
    answers = table["reference_answer"].to_pylist()
    extra = {c: table[c].to_pylist() for c in columns}
    return {int(i): JudgeInput(problems[i], solutions[i], steps[i], answers[i], conversation(generate, problems[i]),
                               {c: values[i] for c, values in extra.items()})
            for i in selected.nonzero()[0]}


def _requests(verdicts: dict[int, Verdict], groups: list[str]) -> int:
    """Group mode: one request per group whose rows the engine judged (each row carries its group's calls)."""
    calls = {}
    for i, v in verdicts.items():
        if v.status != JudgeStatus.ERROR and v.prompt_tokens is not None:
            calls[groups[i]] = v.calls
    return sum(calls.values())


def _default_name(cfg) -> str | None:
    from sgpo_data.backends.models import resolve_model

    return resolve_model(None)[1] if cfg.backend == "transformers" else None


def _with_verdicts(table: pa.Table, steps: pa.ListArray, verdicts: dict[int, Verdict], skipped, judge_name) -> pa.Table:
    """The judge columns: a verdict's, or for a row not judged the reason (`skipped`)."""
    v = [verdicts.get(i) for i in range(table.num_rows)]
    columns = {
        "steps": steps,
        "first_error_step": [x.first_error_step if x else None for x in v],
        "judge_status": [x.status if x else str(skipped[i]) for i, x in enumerate(v)],
        "judge_model": [(x.judge or judge_name) if x else None for x in v],
        "judge_raw": [x.raw if x else None for x in v],
        "judge_prompt_tokens": [x.prompt_tokens if x else None for x in v],
        "judge_completion_tokens": [x.completion_tokens if x else None for x in v],
        "judge_calls": [x.calls if x else None for x in v],
        "judge_seconds": [x.seconds if x else None for x in v],
        "judge_error_kind": [x.error_kind if x else None for x in v],
        "judge_error": [x.error if x else None for x in v],
    }
    for name, values in columns.items():
        table = table.append_column(JUDGE_SCHEMA.field(name), pa.array(values, JUDGE_SCHEMA.field(name).type))
    return table.select(JUDGE_SCHEMA.names).cast(JUDGE_SCHEMA)
