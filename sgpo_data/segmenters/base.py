"""The segmenter protocol: a response in, its steps out; nothing of the response is lost.

`segment(text)` divides the response into the part the judge sees and the rest: `Segmented(prefix, steps,
suffix)` with `prefix + "".join(steps) + suffix == text` exactly, so step positions map back to the text.
`split(text)` is the steps alone; `split_many(texts)` splits a whole column into one list<string> array (a
missing text has no steps), vectorised by `paragraph` and `lines` for think="both" and min_chars=0. Which part
is judged is the `think` option (reasoning models write `<think> ... </think>` before their final solution):

- "both" (the default): the whole response; prefix and suffix are "", so `"".join(steps) == text`.
- "solution": the text after the first `</think>`. The prefix is everything up to that tag (the thinking,
  with or without its opening `<think>`, which many chat templates put in the prompt) and the whitespace that
  follows it; the suffix is "".
- "thinking": the text between the first `<think>` and the first `</think>` (from the start of the text when
  the opening tag is missing; to the end of the text when the closing tag is missing, i.e. the model ran out
  of tokens while thinking). The tags and the whitespace next to them go to the prefix and the suffix, and
  so does the solution.

Only the exact lower-case tags `<think>` and `</think>` are recognised. When the chosen part has no content
(no `</think>` at all, so no solution: a response without thinking, or one cut off while thinking; nothing
but whitespace after `</think>`; an empty thinking block), the whole response is judged, as with "both": a
step list is never empty, and a response with content is never judged on a blank step.

Within the judged part a segmenter names where new steps may start (`boundaries`); the base class keeps only
the boundaries with content on both sides (leading whitespace belongs to the first step, trailing whitespace
to the last, a part with no content is one step), then applies the options every segmenter shares: steps
shorter than `min_chars` (content only) are merged into the step before them, and past `max_steps` the tail is
merged into the last step.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal, NamedTuple

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.errors import SgpoError
from sgpo_data.registry import Registry

_LEADING_SPACE_RE = re.compile(r"\s*")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
Texts = Sequence[str | None] | pa.Array | pa.ChunkedArray


class SegmenterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_chars: int = Field(0, ge=0, description="a step with fewer non-blank characters joins the step before it")
    max_steps: int | None = Field(None, ge=1, description="at most this many steps: the rest joins the last one")
    think: Literal["both", "solution", "thinking"] = Field(
        "both", description="what the judge sees of a response with <think>...</think>: both (the whole "
        "response), solution (the text after </think>) or thinking (the text inside the block); a response "
        "whose chosen part is missing or blank is judged whole")


class Segmented(NamedTuple):
    """A response divided: `prefix + "".join(steps) + suffix` is the response; only the steps are judged."""

    prefix: str
    steps: list[str]
    suffix: str


def judged_span(text: str, think: str = "both") -> tuple[int, int]:
    """`(start, end)`: `text[start:end]` is the part judged under `think` (see the module docstring)."""
    if think == "both":
        return 0, len(text)
    close = text.find(THINK_CLOSE)
    if think == "solution":
        if close < 0:
            return 0, len(text)
        start, end = close + len(THINK_CLOSE), len(text)
    elif think == "thinking":
        open_ = text.find(THINK_OPEN, 0, None if close < 0 else close)
        if open_ < 0 and close < 0:
            return 0, len(text)
        start = 0 if open_ < 0 else open_ + len(THINK_OPEN)
        end = len(text) if close < 0 else close
        if close >= 0:  # the whitespace before </think> stays with the tag
            end = start + len(text[start:end].rstrip())
    else:
        raise SgpoError(f"judge.segmenter.options.think: unknown mode {think!r}; valid: both, solution, thinking")
    start = _LEADING_SPACE_RE.match(text, start, end).end()  # the whitespace after the tag stays with it
    if start == end:  # the chosen part is blank: judge the whole response
        return 0, len(text)
    return start, end


class Segmenter(ABC):
    def __init__(self, options: SegmenterOptions | None = None):
        self.options = options or SegmenterOptions()

    @abstractmethod
    def boundaries(self, text: str) -> list[int]:
        """Offsets where a new step may start, in increasing order."""

    def segment(self, text: str) -> Segmented:
        """The judged part's steps (at least one) between the rest of the text: prefix + steps + suffix == text."""
        start, end = judged_span(text, self.options.think)
        return Segmented(text[:start], self._steps(text[start:end]), text[end:])

    def split(self, text: str) -> list[str]:
        """The judged steps, at least one; with think="both" `"".join(steps) == text` exactly."""
        return self.segment(text).steps

    def split_many(self, texts: Texts) -> pa.ListArray:
        """`split` of every text as one list<string> array (a `steps` column); a missing text (None) has no steps."""
        if isinstance(texts, (pa.Array, pa.ChunkedArray)):
            texts = texts.to_pylist()
        return pa.array([self.split(t) if t is not None else [] for t in texts], pa.list_(pa.string()))

    def _steps(self, text: str) -> list[str]:
        stripped = text.lstrip()  # str.strip and the regex class \s agree on what whitespace is (str.isspace)
        if not stripped:
            return [text]
        first, last = len(text) - len(stripped), len(text.rstrip()) - 1  # the first and last content characters
        # a boundary needs content before it and at or after it
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


# Every segmenter registers itself here, in its own file of this package (found on first use).
SEGMENTERS: Registry[Segmenter] = Registry("segmenter", package="sgpo_data.segmenters")
