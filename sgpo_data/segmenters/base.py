"""The segmenter protocol: a response in, its steps out; joining the steps restores the response."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Segmenter(ABC):
    @abstractmethod
    def split(self, text: str) -> list[str]:
        """At least one step; `"".join(steps) == text` exactly, so step positions map back to the text."""


def strip_steps(steps: list[str]) -> list[str]:
    """Display versions of the steps (surrounding whitespace removed), e.g. for numbering in a judge prompt."""
    return [step.strip() for step in steps]
