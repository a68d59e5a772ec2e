"""Outcome graders, chosen by name: `get_grader("math_verify", {"timeout_s": 5.0})`."""

from __future__ import annotations

from sgpo_data.graders.base import GradeResult, Grader
from sgpo_data.registry import Registry

GRADERS: Registry[Grader] = Registry("grader")


def get_grader(name: str, options: dict | None = None, key: str = "grader.options", **kwargs) -> Grader:
    """The grader `name`, its options validated by the grader's own model (kwargs: test-only hooks)."""
    return GRADERS.get(name, **GRADERS.options(name, options, key).model_dump(), **kwargs)


# Registers the implementations; each imports its heavy libraries only where used.
from sgpo_data.graders import math_verify_grader  # noqa: E402,F401

__all__ = ["GRADERS", "GradeResult", "Grader", "get_grader"]
