"""A step judge reads a problem, its reference solution and a response cut into steps, and names the
earliest wrong step (0-based), or -1 when it finds none.

A judge decides locally (`decide`: a deterministic check, existing labels, a local reward model) or through an
engine. Engine work comes as `Task`s: a task judges some rows through a `session`, a generator that yields a
request, is sent its result, maybe yields another (a binary search over step prefixes), and returns one verdict
per row. Most judges ask one request per row (`request`, then `verdict`); a group judge asks one request for
every wrong response of a group. `Sessions` drives tasks; `judges.core` runs them through the pipeline's
request scheduler for every caller.
"""

from __future__ import annotations

import time
from abc import ABC
from collections.abc import Callable, Generator, Hashable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from sgpo_data.backends.base import Backend, Request, Result
from sgpo_data.errors import SgpoError
from sgpo_data.outcomes import RequestError
from sgpo_data.registry import Registry
from sgpo_data.schema import JudgeStatus


@dataclass(frozen=True)
class JudgeInput:
    problem: str
    reference_solution: str | None
    steps: list[str]
    reference_answer: str | None = None  # for judges that grade continuations (mc)
    prompt: list[dict] | None = None  # the policy's conversation for the problem (mc continues it); None: the problem
    columns: Mapping = field(default_factory=dict)  # other columns of the row a judge asked for (labels)

    def identity(self) -> dict:
        """What the verdict may depend on: the cache key's part for this item."""
        return {"problem": self.problem, "reference_solution": self.reference_solution, "steps": self.steps,
                "reference_answer": self.reference_answer, "prompt": self.prompt, "columns": dict(self.columns)}


@dataclass(frozen=True)
class Verdict:
    first_error_step: int | None  # None when the answer could not be used
    status: str  # JudgeStatus
    raw: str | None  # what the judge said, kept for audit
    error_kind: str | None = None  # status error: an ErrorKind
    error: str | None = None  # status error: the error text (with the raw body when there was one)
    prompt_tokens: int | None = None  # usage of the engine requests behind the verdict (None: no engine request)
    completion_tokens: int | None = None
    judge: str | None = None  # which judge decided, when it is not the stage's engine (e.g. "arith" in a cascade)
    calls: int = 0  # engine requests behind the verdict (a group request counts for each row it judged)
    seconds: float = 0.0  # time the verdict took: its requests' time in flight, or the local decision's

    @classmethod
    def failed(cls, error: RequestError) -> "Verdict":
        return cls(None, JudgeStatus.ERROR, None, error.kind, error.message)


Session = Generator[Request, Result, list[Verdict]]  # yields requests, is sent their results, returns verdicts


@dataclass(eq=False)
class Task:
    """Engine work for `rows`: `session` returns their verdicts, in the same order."""

    rows: list[Hashable]
    session: Session
    calls: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def in_scope(scope: str, answered: np.ndarray, correct: np.ndarray, groups: list[str]) -> np.ndarray:
    """Rows to judge under `judge.scope`: answered and wrong (`wrong`); answered, wrong and in a group with no
    right answer (`all_negative_groups`); or every answered one (`all`)."""
    if scope == "all":
        return answered.copy()
    selected = answered & ~correct
    if scope == "all_negative_groups":
        solved = {g for g, c in zip(groups, correct) if c}
        selected &= np.array([g not in solved for g in groups], dtype=bool)
    return selected


class Judge(ABC):
    """The engine is loaded at the first request, so a judge that decides everything locally never loads one."""

    model_name: str
    columns: tuple[str, ...] = ()  # row columns the judge reads (JudgeInput.columns)
    caches_decisions = False  # whether local verdicts are worth caching (a reward model's, not a regex check's)

    def __init__(self, engine: Callable[[], Backend] | None = None):
        self._engine, self._backend = engine, None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self._engine is None:
                raise SgpoError(f"judge {type(self).__name__} decides without an engine; it sends no requests")
            self._backend = self._engine()
        return self._backend

    def loaded_model_name(self) -> str | None:
        """The engine's model name if the engine is loaded (None: not loaded, or no engine)."""
        return self._backend.model_name if self._backend is not None else None

    def identity(self) -> dict:
        """What else decides the verdicts besides the options (e.g. a template file's text), for cache keys."""
        return {}

    def decide(self, item: JudgeInput) -> Verdict | None:
        """The verdict without an engine, or None when the engine has to be asked."""
        return None

    def decide_many(self, items: list[JudgeInput]) -> list[Verdict | None]:
        """`decide` for a list (a judge with a local model batches it)."""
        verdicts = []
        for item in items:
            start = time.perf_counter()
            verdict = self.decide(item)
            if verdict is not None and not verdict.seconds:
                verdict = replace(verdict, seconds=time.perf_counter() - start)
            verdicts.append(verdict)
        return verdicts

    @property
    def grouped(self) -> bool:
        """Whether a row's verdict depends on the other rows of its group (one request judges a group)."""
        return False

    def tasks(self, items: Mapping[Hashable, JudgeInput], groups: Mapping[Hashable, Hashable]) -> list[Task]:
        """The engine work for `items` (those `decide` left), keyed by row; `groups` gives each row's group.
        By default one task, of one request, per row."""
        return [Task([row], self.session(item)) for row, item in items.items()]

    def session(self, item: JudgeInput) -> Session:
        result = yield self.request(item)
        return [self.verdict(item, result)]

    def request(self, item: JudgeInput) -> Request:
        """The engine request that judges `item`."""
        raise SgpoError(f"judge {type(self).__name__} decides without an engine; it sends no requests")

    def verdict(self, item: JudgeInput, result: Result) -> Verdict:
        """The verdict from the request's result; a RequestError becomes a verdict with status error."""
        raise SgpoError(f"judge {type(self).__name__} decides without an engine; it reads no results")

    def judge(self, items: list[JudgeInput], max_in_flight: int | None = None,
              groups: list[Hashable] | None = None) -> list[Verdict]:
        """One verdict per item, in order, through the pipeline's request scheduler (`judges.core`); a failed
        request is a verdict with status error, not an exception. A failure of the service raises its
        ServiceError once the requests already in flight are answered (None: every request at once)."""
        from sgpo_data.judges.core import JudgeJob, run_jobs

        job = JudgeJob(self, dict(enumerate(items)), dict(enumerate(groups or range(len(items)))))
        for _ in run_jobs(self, [job], max_in_flight):
            pass
        return [job.verdicts[i] for i in range(len(items))]

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


class Sessions:
    """Drives tasks through an engine: `start()` gives every task's first request; `take(request, result)`
    records a result and gives the task's next request, if any. Finished rows land in `verdicts`, each with its
    task's calls, tokens and time (a group's tokens are shared out among its rows)."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks
        self.verdicts: dict[Hashable, Verdict] = {}
        self._new: list[Hashable] = []

    def start(self) -> list[Request]:
        return [r for task in self.tasks for r in self._advance(task, None, first=True)]

    def finished(self) -> list[tuple[Hashable, Verdict]]:
        """The rows finished since the last call, with their verdicts."""
        new, self._new = self._new, []
        return [(row, self.verdicts[row]) for row in new]

    def take(self, request: Request, result: Result) -> list[Request]:
        task: Task = request.tag
        task.calls += 1
        task.seconds += time.monotonic() - request.sent if request.sent is not None else 0.0
        if not isinstance(result, RequestError):
            task.prompt_tokens += result.prompt_tokens or 0
            task.completion_tokens += _completion_tokens(result)
        return self._advance(task, result)

    def _advance(self, task: Task, result: Result | None, first: bool = False) -> list[Request]:
        try:
            request = next(task.session) if first else task.session.send(result)
        except StopIteration as done:
            self._finish(task, done.value)
            return []
        request.tag = task
        return [request]

    def _finish(self, task: Task, verdicts: list[Verdict]) -> None:
        if len(verdicts) != len(task.rows):
            raise SgpoError(f"a judge session returned {len(verdicts)} verdicts for {len(task.rows)} rows")
        n = len(task.rows)
        for position, (row, verdict) in enumerate(zip(task.rows, verdicts)):
            if task.calls:  # usage shared out: row 0 takes the remainder, so the rows sum to the task's usage
                share = lambda total: total // n + (total % n if position == 0 else 0)  # noqa: E731
                verdict = replace(verdict, calls=task.calls, seconds=task.seconds,
                                prompt_tokens=share(task.prompt_tokens), completion_tokens=share(task.completion_tokens))
            self.verdicts[row] = verdict
            self._new.append(row)


def _completion_tokens(result) -> int:
    if hasattr(result, "completions"):
        return sum(c.num_tokens for c in result.completions)
    return getattr(result, "completion_tokens", 0) or 0


# Every judge registers itself here, in its own file of this package (found on first use).
JUDGES: Registry[Judge] = Registry("judge", package="sgpo_data.judges")
