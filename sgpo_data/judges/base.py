"""A step judge reads a problem, its reference solution and a response cut into steps, and names the
earliest wrong step (0-based), or -1 when it finds none."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

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

    @classmethod
    def failed(cls, error: RequestError) -> "Verdict":
        return cls(None, JudgeStatus.ERROR, None, error.kind, error.message)


class Judge(ABC):
    model_name: str

    @abstractmethod
    def judge(self, items: list[JudgeInput]) -> list[Verdict | ServiceError]:
        """One verdict per item, in order; a failed request is a verdict with status error, not an exception.
        A failure of the service is a ServiceError in the item's place: the stage keeps the verdicts that came
        back, then stops."""

    def close(self) -> None:
        pass
