"""Outcome graders, chosen by name: `get_grader("math_verify", {"timeout_s": 5.0})`. Each grader registers itself
in its own file of this package: `@GRADERS.register("name", options=Options)` on its class."""

from __future__ import annotations

from sgpo_data.graders.base import GRADERS, GradeResult, Grader


def get_grader(name: str, options: dict | None = None, key: str = "grader.options", **kwargs) -> Grader:
    """The grader `name`, its options validated by the grader's own model (kwargs: test-only hooks)."""
    return GRADERS.get(name, **GRADERS.options(name, options, key).model_dump(), **kwargs)

__all__ = ["GRADERS", "GradeResult", "Grader", "get_grader"]
