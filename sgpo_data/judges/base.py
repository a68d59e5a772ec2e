"""A step judge reads a problem, its reference solution and a response cut into steps, and names the
earliest wrong step (0-based), or -1 when it finds none."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


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


class Judge(ABC):
    model_name: str

    @abstractmethod
    def judge(self, items: list[JudgeInput]) -> list[Verdict]:
        """One verdict per item, in order; a failure on one item is a verdict, not an exception."""

    def close(self) -> None:
        pass
