"""The judging core: rows in, verdicts out, for every caller: the judge stage, `SGPOReward` (TRL), verl's
`compute_score` and eval-judge.

`Judging` is a `judge:` section made runnable. It checks the section's parts and options once, cuts each row's
response into steps with the section's segmenter, picks the rows in `scope`, and turns them into a `JudgeJob`:
the rows a judge decides locally (arith, labels, prm) are decided at once, those the call cache knows are looked
up, and the rest become engine sessions (`judges.base`). Jobs run through the one request scheduler of the
pipeline (`pipeline.stream.stream_shards`), which keeps the engine's window full across jobs and hands back each
job as soon as its last request is answered.

A failed request is a verdict with status error; a failed service raises its `ServiceError` once the requests
already in flight are answered.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from sgpo_data.backends.base import Backend, Request
from sgpo_data.config import JudgeConfig, identity
from sgpo_data.judges.base import Judge, JudgeInput, Sessions, Verdict, in_scope
from sgpo_data.pipeline.cache import CallCache, request_key
from sgpo_data.pipeline.stage import Shard, ShardOutput
from sgpo_data.pipeline.stream import ShardJob, stream_shards
from sgpo_data.schema import JudgeStatus


@dataclass(frozen=True)
class Row:
    """One response to judge, with what the judge may read."""

    problem: str
    response: str | None  # None: no response (its generation failed); never judged
    reference_answer: str | None = None
    reference_solution: str | None = None
    group: Hashable = None  # the responses to one prompt share it; None: a group of its own
    correct: bool | None = None  # the outcome grade; None: not graded (wrong for `scope`)
    prompt: list[dict] | None = None  # the policy's conversation for the problem (mc continues it)
    columns: Mapping = field(default_factory=dict)  # other columns a judge reads (labels)
    steps: list[str] | None = None  # already cut (eval-judge's labelled steps); None: the segmenter cuts `response`


class JudgeJob(ShardJob):
    """Verdicts for `items` (keyed by row): local decisions and cached verdicts at once, the rest through engine
    sessions. `key(row)` gives a row's cache key (None: no cache). `on_verdict(row, verdict)` is called for each
    verdict as it comes (a caller that writes them as they come loses none to a failure or a signal). After the
    stream hands the job back, `verdicts` holds every item's verdict."""

    def __init__(self, judge: Judge, items: Mapping[Hashable, JudgeInput], groups: Mapping[Hashable, Hashable],
                 cache: CallCache | None = None, key: Callable[[Hashable], str] | None = None,
                 shard: Shard | None = None, on_verdict: Callable[[Hashable, Verdict], None] | None = None):
        super().__init__(shard or Shard(0, "", len(items)))
        self.judge, self.items, self.cache = judge, items, cache if key is not None else None
        self.key, self.on_verdict = key, on_verdict
        self.keys: dict[Hashable, str] = {}
        self.verdicts: dict[Hashable, Verdict] = {}
        # A judge that caches its local decisions (prm) looks them up first; any other judge's cache holds engine
        # verdicts only, so the rows it decides locally (arith, labels) need no cache key.
        if judge.caches_decisions:
            self._look_up(list(items))
        left = [i for i in items if i not in self.verdicts]
        for i, local in zip(left, judge.decide_many([items[i] for i in left])):
            if local is not None:
                self._record(i, local, cache=judge.caches_decisions)
        self._look_up([i for i in items if i not in self.verdicts and i not in self.keys])
        asked = {i: items[i] for i in items if i not in self.verdicts}
        self.sessions = Sessions(judge.tasks(asked, {i: groups[i] for i in asked}))

    def _look_up(self, rows: list[Hashable]) -> None:
        if self.cache is None:
            return
        for i in rows:
            self.keys[i] = self.key(i)
            if (cached := self.cache.get(self.keys[i])) is not None:
                self._record(i, Verdict(**cached), cache=False)

    def _record(self, i: Hashable, verdict: Verdict, cache: bool) -> None:
        """Keep a verdict; cache it unless a request failed (the next run retries)."""
        self.verdicts[i] = verdict
        if cache and self.cache is not None and verdict.status != JudgeStatus.ERROR:
            self.cache.put(self.keys[i], verdict.__dict__)
        if self.on_verdict is not None:
            self.on_verdict(i, verdict)

    def requests(self) -> list[Request]:
        requests = self.sessions.start()
        self._collect()  # sessions that decided without asking (mc: a right answer, a one-step response)
        return requests

    def take(self, request: Request, result) -> list[Request]:
        follow_ups = self.sessions.take(request, result)
        self._collect()
        return follow_ups

    def _collect(self) -> None:
        """Record the verdicts of finished tasks."""
        for i, verdict in self.sessions.finished():
            self._record(i, verdict, cache=True)

    def finish(self) -> ShardOutput:
        return ShardOutput()

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


class RowsJob(JudgeJob):
    """A `JudgeJob` over rows: their steps, which of them are in scope, and the verdicts of those."""

    def __init__(self, judging: Judging, rows: list[Row], cache: CallCache | None = None,
                 shard: Shard | None = None, on_verdict: Callable[[int, Verdict], None] | None = None):
        self.rows = rows
        # the steps, as a list<string> array (the judge stage's `steps` column): cut by the segmenter, or given
        cut = judging.segmenter.split_many([r.response if r.steps is None else None for r in rows])
        if any(r.steps is not None for r in rows):
            cut = pa.array([r.steps if r.steps is not None else s for r, s in zip(rows, cut.to_pylist())],
                           pa.list_(pa.string()))
        self.steps_column, self.steps = cut, cut.to_pylist()
        self.answered = answered = np.array([r.response is not None or r.steps is not None for r in rows], dtype=bool)
        correct = np.array([r.correct is True for r in rows], dtype=bool)
        self.groups = [r.group if r.group is not None else ("row", i) for i, r in enumerate(rows)]
        self.selected = in_scope(judging.cfg.scope, answered, correct, self.groups)
        items = {int(i): JudgeInput(rows[i].problem, rows[i].reference_solution, self.steps[i],
                                    rows[i].reference_answer, rows[i].prompt,
                                    {c: rows[i].columns.get(c) for c in judging.judge.columns})
                 for i in self.selected.nonzero()[0]}
        members: dict[Hashable, list[int]] = {}
        for i in items:
            members.setdefault(self.groups[i], []).append(i)
        grouped = judging.judge.grouped
        key = (lambda i: judging.key(items[i], [items[j] for j in members[self.groups[i]]] if grouped else None))
        super().__init__(judging.judge, items, {i: self.groups[i] for i in items}, cache, key, shard, on_verdict)

    def ordered(self) -> list[Verdict | None]:
        """One verdict per row, in order (None: the row was not judged)."""
        return [self.verdicts.get(i) for i in range(len(self.rows))]


class Judging:
    """The `judge:` section `cfg`, checked, with its segmenter and its judge. `engine`: the judge's engine (a
    `Backend` or a function that loads one; default: the section's backend, loaded at the first request).
    `policy`: the policy's engine, for judges that sample from it (mc); None makes such a judge refuse.
    `context`: what else decides the verdicts, for cache keys (the policy's backend and model)."""

    def __init__(self, cfg: JudgeConfig, engine: Backend | Callable[[], Backend] | None = None,
                 policy: Backend | Callable[[], Backend] | None = None, context: dict | None = None):
        from sgpo_data.backends import get_backend
        from sgpo_data.judges import get_judge
        from sgpo_data.segmenters import get_segmenter

        self.cfg, self.context = cfg, context or {}
        self.judge_options = cfg.resolve("judge")
        self.backend_options = cfg.backend.resolve("judge.backend")
        cfg.segmenter.resolve("judge.segmenter")
        self.segmenter = get_segmenter(cfg.segmenter.name, cfg.segmenter.options)
        if engine is None:
            engine = lambda: get_backend(cfg.backend.name, cfg.model, cfg.backend.options, "judge.backend.options")
        # A cascade checks its judges' names and options here; no engine loads before the first request.
        self.judge = get_judge(cfg.name, engine, cfg.options, policy=policy)

    def check_columns(self, available: Iterable[str], where: str) -> None:
        """The judge's columns (labels) must be in the data."""
        from sgpo_data.errors import SgpoError

        available = list(available)
        missing = [c for c in self.judge.columns if c not in available]
        if missing:
            raise SgpoError(f"judge {self.cfg.name}: {where} has no column {missing[0]!r} to read labels from; "
                            f"columns: {', '.join(available)}; set judge.options.column")

    def key(self, item: JudgeInput, group: list[JudgeInput] | None = None) -> str:
        """A row's cache key: the judge, its engine and the item (in group mode, with its group); never
        max_in_flight or timeouts."""
        cfg = self.cfg
        return request_key(judge=cfg.name, options=self.judge_options.model_dump(),
                           judge_identity=self.judge.identity(), backend=cfg.backend.name, model=cfg.model,
                           backend_options=identity(self.backend_options), **self.context, item=item.identity(),
                           group=[other.identity() for other in group] if group is not None else None)

    def job(self, rows: list[Row], cache: CallCache | None = None, shard: Shard | None = None,
            on_verdict: Callable[[int, Verdict], None] | None = None) -> RowsJob:
        """The job for `rows`; `cache`: the call cache its engine verdicts are kept in and looked up from;
        `on_verdict(row, verdict)`: called as each verdict comes."""
        return RowsJob(self, rows, cache, shard, on_verdict)

    def stream(self, jobs: Iterable[JudgeJob], advance: Callable[[int], None] = lambda n: None
               ) -> Iterator[JudgeJob]:
        """Each job once its verdicts are in, the engine's window kept full across jobs; raises the service's
        ServiceError after the requests in flight are answered."""
        for _shard, _output, job in _with_jobs(self.judge, jobs, self.cfg.max_in_flight, advance):
            yield job

    def verdicts(self, rows: list[Row], cache: CallCache | None = None) -> list[Verdict | None]:
        """One verdict per row (None: not in scope, or no response)."""
        job = self.job(rows, cache)
        for _ in self.stream([job]):
            pass
        return job.ordered()

    def close(self) -> None:
        self.judge.close()


def judging_for(recipe) -> Judging:
    """The recipe's judge section; judges that sample from the policy (mc) use the generate section's engine."""
    from sgpo_data.backends import get_backend

    policy = recipe.generate
    return Judging(recipe.judge, policy=lambda: get_backend(policy.backend.name, policy.model, policy.backend.options,
                                                             "generate.backend.options"),
                   context={"policy": [policy.backend.name, policy.model]})


def run_jobs(judge: Judge, jobs: Iterable[JudgeJob], max_in_flight: int | None = None) -> Iterator[JudgeJob]:
    """Each job once its verdicts are in (the judge's engine loads at the first request that is not cached)."""
    for _shard, _output, job in _with_jobs(judge, jobs, max_in_flight, lambda n: None):
        yield job


def _with_jobs(judge: Judge, jobs: Iterable[JudgeJob], max_in_flight: int | None, advance):
    by_shard: dict[int, JudgeJob] = {}

    def tracked():
        for job in jobs:
            by_shard[id(job.shard)] = job
            yield job

    budget = max_in_flight or 1 << 20  # None: every request at once
    for shard, output in stream_shards(tracked(), lambda: judge.backend, budget, advance):
        yield shard, output, by_shard.pop(id(shard))
