"""The segmenter protocol: a response in, its steps out; joining the steps restores the response exactly.

A segmenter names where new steps may start (`boundaries`); the base class keeps only the boundaries with
content on both sides (leading whitespace belongs to the first step, trailing whitespace to the last, a text
with no content is one step), then applies the options every segmenter shares: steps shorter than `min_chars`
(content only) are merged into the step before them, and past `max_steps` the tail is merged into the last step.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from pydantic import BaseModel, ConfigDict, Field

_CONTENT_RE = re.compile(r"\S")


class SegmenterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_chars: int = Field(0, ge=0, description="a step with fewer non-blank characters joins the step before it")
    max_steps: int | None = Field(None, ge=1, description="at most this many steps: the rest joins the last one")


class Segmenter(ABC):
    def __init__(self, options: SegmenterOptions | None = None):
        self.options = options or SegmenterOptions()

    @abstractmethod
    def boundaries(self, text: str) -> list[int]:
        """Offsets where a new step may start, in increasing order."""

    def split(self, text: str) -> list[str]:
        """At least one step; `"".join(steps) == text` exactly, so step positions map back to the text."""
        content = [m.start() for m in _CONTENT_RE.finditer(text)]
        if not content:
            return [text]
        first, last = content[0], content[-1]  # a boundary needs content before it and at or after it
        cuts = sorted({b for b in self.boundaries(text) if first < b <= last})
        steps = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        return self._shape(steps)

    def _shape(self, steps: list[str]) -> list[str]:
        min_chars, max_steps = self.options.min_chars, self.options.max_steps
        if min_chars:
            merged = [steps[0]]
            for step in steps[1:]:
                if len("".join(step.split())) < min_chars:
                    merged[-1] += step
                else:
                    merged.append(step)
            if len(merged) > 1 and len("".join(merged[0].split())) < min_chars:  # a short first step joins the next
                merged[0:2] = [merged[0] + merged[1]]
            steps = merged
        if max_steps is not None and len(steps) > max_steps:
            steps = steps[: max_steps - 1] + ["".join(steps[max_steps - 1 :])]
        return steps


def strip_steps(steps: list[str]) -> list[str]:
    """Display versions of the steps (surrounding whitespace removed), e.g. for numbering in a judge prompt."""
    return [step.strip() for step in steps]
