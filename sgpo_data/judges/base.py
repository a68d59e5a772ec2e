"""A step judge reads a problem, its reference solution and a response cut into steps, and names the
earliest wrong step (0-based), or -1 when it finds none."""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass

from sgpo_data.backends.base import Backend, Request, Result
from sgpo_data.errors import SgpoError, ServiceError
from sgpo_data.outcomes import RequestError
from sgpo_data.schema import JudgeStatus


@dataclass(frozen=True)
class JudgeInput:
    problem: str
    reference_solution: str | None
    steps: list[str]


@dataclass(frozen=True)
class Verdict:
    first_error_step: int | None  # None when the answer could not be used
    status: str  # JudgeStatus
    raw: str | None  # what the judge said, kept for audit
    error_kind: str | None = None  # status error: an ErrorKind
    error: str | None = None  # status error: the error text (with the raw body when there was one)
    prompt_tokens: int | None = None  # usage of the request that gave the verdict (None: no engine request)
    completion_tokens: int | None = None
    judge: str | None = None  # which judge decided, when it is not the stage's engine (e.g. "arith" in a cascade)

    @classmethod
    def failed(cls, error: RequestError) -> "Verdict":
        return cls(None, JudgeStatus.ERROR, None, error.kind, error.message)


class Judge(ABC):
    """A judge decides locally (`decide`: a deterministic check, existing labels) or through one engine request per
    judged response (`request` says what to ask, `verdict` reads the answer). The judge stage streams the requests
    of many rows through the engine; `judge` does the same for a list. The engine is loaded at the first request,
    so a judge that decides everything locally never loads one."""

    model_name: str

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

    def decide(self, item: JudgeInput) -> Verdict | None:
        """The verdict without an engine, or None when the engine has to be asked."""
        return None

    def request(self, item: JudgeInput) -> Request:
        """The engine request that judges `item`."""
        raise SgpoError(f"judge {type(self).__name__} decides without an engine; it sends no requests")

    def verdict(self, item: JudgeInput, result: Result) -> Verdict:
        """The verdict from the request's result; a RequestError becomes a verdict with status error."""
        raise SgpoError(f"judge {type(self).__name__} decides without an engine; it reads no results")

    def judge(self, items: list[JudgeInput], max_in_flight: int | None = None) -> list[Verdict | ServiceError]:
        """One verdict per item, in order; a failed request is a verdict with status error, not an exception.
        A failure of the service is a ServiceError in the item's place."""
        verdicts: list = [self.decide(item) for item in items]
        asked = [i for i, v in enumerate(verdicts) if v is None]
        if asked:
            results = self.backend.run([self.request(items[i]) for i in asked], max_in_flight)
            for i, r in zip(asked, results):
                verdicts[i] = r if isinstance(r, ServiceError) else self.verdict(items[i], r)
        return verdicts

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
