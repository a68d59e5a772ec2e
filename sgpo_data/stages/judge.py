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

from sgpo_data.backends.base import Request
from sgpo_data.config import identity
from sgpo_data.judges import Verdict
from sgpo_data.judges.core import Row, judging_for
from sgpo_data.pipeline.cache import CallCache
from sgpo_data.pipeline.folder import add_counts
from sgpo_data.pipeline.stage import Shard, ShardOutput, shard_per_part
from sgpo_data.pipeline.stream import ShardJob, StreamingStage
from sgpo_data.prompts import conversation
from sgpo_data.run_reader import StageFiles
from sgpo_data.schema import GENERATE_SCHEMA, JUDGE_FIELDS, JUDGE_SCHEMA, JudgeStatus


class JudgeStage(StreamingStage):
    """Cut responses into steps and find the first wrong step of each wrong one."""

    name = "judge"
    upstream = "generate"
    needs = tuple(GENERATE_SCHEMA.names)
    adds = tuple(JUDGE_FIELDS)
    status_column = "judge_status"

    def config(self) -> dict:
        cfg = self.recipe.judge
        judge = identity(cfg)  # not max_in_flight
        judge["backend"]["options"] = identity(cfg.backend.resolve("judge.backend"))
        return {"judge": judge}

    def plan(self, upstream: StageFiles) -> tuple[list[Shard], str]:
        return shard_per_part(upstream), upstream.manifest()["identity"]

    def open(self, run) -> None:
        super().open(run)
        self.judging = judging_for(self.recipe)  # its engine loads at the first request the cache cannot answer
        self.max_in_flight = self.recipe.judge.max_in_flight

    @property
    def judge(self):
        return self.judging.judge

    def engine(self):
        return self.judge.backend

    def close(self) -> None:
        if getattr(self, "judging", None) is not None:
            self.judging.close()

    def job(self, shard: Shard) -> _JudgeJob:
        return _JudgeJob(self, shard, CallCache(StageFiles(self.run, self.name).cache_path(shard.index)))

    def judge_name(self) -> str | None:
        """The engine judge's model, as loaded, else as configured (the cache answered every row)."""
        cfg = self.recipe.judge
        return self.judge.loaded_model_name() or cfg.model or _default_name(cfg)

    def statistics(self, shard_stats: list[dict]) -> dict:
        found = add_counts(stats.get("errors_found_by", {}) for stats in shard_stats)
        return {**super().statistics(shard_stats), "errors_found_by": found}


class _JudgeJob(ShardJob):
    """One shard's rows through the judging core; `finish` writes them with their verdicts."""

    def __init__(self, stage: JudgeStage, shard: Shard, cache: CallCache):
        super().__init__(shard)
        self.stage = stage
        self.table = table = shard.load()
        try:
            stage.judging.check_columns(table.column_names, shard.where)
        except BaseException:
            cache.close()
            raise
        self.inner = stage.judging.job(_rows(table, stage.judge.columns, stage.recipe.generate), cache, shard)

    def requests(self) -> list[Request]:
        return self.inner.requests()

    def take(self, request: Request, result) -> list[Request]:
        return self.inner.take(request, result)

    def finish(self) -> ShardOutput:
        verdicts, groups = self.inner.verdicts, self.inner.groups
        engine = [v for v in verdicts.values() if v.status != JudgeStatus.ERROR and v.prompt_tokens is not None]
        usage = {"requests": _requests(verdicts, groups) if self.stage.judge.grouped
                 else sum(v.calls for v in engine),
                 "prompt_tokens": sum(v.prompt_tokens for v in engine),
                 "completion_tokens": sum(v.completion_tokens or 0 for v in engine),
                 "request_seconds": round(sum(v.seconds for v in verdicts.values()), 3)}
        name = self.stage.judge_name()
        found: dict[str, int] = {}
        for v in verdicts.values():
            if v.first_error_step is not None and v.first_error_step >= 0:
                found[v.judge or name] = found.get(v.judge or name, 0) + 1
        answered = self.inner.answered
        wrong = np.array([c is False for c in self.table["is_correct"].to_pylist()], dtype=bool)
        skipped = np.where(answered, JudgeStatus.SKIPPED_CORRECT, JudgeStatus.SKIPPED_NO_RESPONSE)
        skipped[answered & ~self.inner.selected & wrong] = JudgeStatus.SKIPPED_SCOPE
        table = _with_verdicts(self.table, self.inner.steps_column, verdicts, skipped, name)
        return ShardOutput(table, {"usage": usage, "errors_found_by": found})

    def close(self) -> None:
        self.inner.close()


def _rows(table: pa.Table, columns: tuple[str, ...], generate) -> list[Row]:
    """The shard's rows for the judging core; a row whose generation failed has no response."""
    ok = pc.fill_null(pc.equal(table["generate_status"], "ok"), False).to_pylist()
    problems, responses = table["problem"].to_pylist(), table["response"].to_pylist()
    solutions, answers = table["reference_solution"].to_pylist(), table["reference_answer"].to_pylist()
    groups, graded = table["prompt_id"].to_pylist(), table["is_correct"].to_pylist()
    extra = {c: table[c].to_pylist() for c in columns}
    return [Row(problems[i], responses[i] if ok[i] else None, answers[i], solutions[i], groups[i], graded[i],
                conversation(generate, problems[i]), {c: values[i] for c, values in extra.items()})
            for i in range(table.num_rows)]


def _requests(verdicts: dict[int, Verdict], groups: list[str]) -> int:
    """Group mode: one request per group whose rows the engine judged (each row carries its group's calls)."""
    calls = {}
    for i, v in verdicts.items():
        if v.status != JudgeStatus.ERROR and v.prompt_tokens is not None:
            calls[groups[i]] = v.calls
    return sum(calls.values())


def _default_name(cfg) -> str | None:
    from sgpo_data.backends.models import resolve_model

    return resolve_model(None)[1] if cfg.backend.name == "transformers" else None


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
