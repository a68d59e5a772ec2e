"""The grader protocol: responses and reference answers in, one verdict per row out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from sgpo_data.registry import Registry


@dataclass(frozen=True)
class GradeResult:
    """One row's outcome: the extracted answer, the verdict (None = ungradable) and a GradeStatus."""

    pred_answer: str | None
    is_correct: bool | None
    status: str


class Grader(ABC):
    """Grades a batch of responses; may hold resources (worker processes), so close it or use `with`."""

    @abstractmethod
    def grade(self, responses: list[str], references: list[str | None]) -> list[GradeResult]:
        """Return one GradeResult per response, in order. A bad row is a status, never an exception."""

    def warm(self) -> None:
        """Start whatever the grader needs (worker processes) ahead of the first row."""

    def close(self) -> None:
        """Release whatever the grader holds. Safe to call more than once."""

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# Every grader registers itself here, in its own file of this package (found on first use).
GRADERS: Registry[Grader] = Registry("grader", package="sgpo_data.graders")
