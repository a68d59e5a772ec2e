"""A step judge reads a problem, its reference solution and a response cut into steps, and names the
earliest wrong step (0-based), or -1 when it finds none."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from sgpo_data.backends.base import Backend, Request, Result
from sgpo_data.errors import ServiceError
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
    prompt_tokens: int | None = None  # usage of the request that gave the verdict
    completion_tokens: int | None = None

    @classmethod
    def failed(cls, error: RequestError) -> "Verdict":
        return cls(None, JudgeStatus.ERROR, None, error.kind, error.message)


class Judge(ABC):
    """One engine request per judged response: `request` says what to ask, `verdict` reads the answer. The judge
    stage streams the requests of many rows through the engine; `judge` does the same for a list."""

    model_name: str
    backend: Backend

    @abstractmethod
    def request(self, item: JudgeInput) -> Request:
        """The engine request that judges `item`."""

    @abstractmethod
    def verdict(self, item: JudgeInput, result: Result) -> Verdict:
        """The verdict from the request's result; a RequestError becomes a verdict with status error."""

    def judge(self, items: list[JudgeInput], max_in_flight: int | None = None) -> list[Verdict | ServiceError]:
        """One verdict per item, in order; a failed request is a verdict with status error, not an exception.
        A failure of the service is a ServiceError in the item's place."""
        results = self.backend.run([self.request(item) for item in items], max_in_flight)
        return [r if isinstance(r, ServiceError) else self.verdict(item, r) for item, r in zip(items, results)]

    def close(self) -> None:
        self.backend.close()
