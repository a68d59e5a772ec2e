"""Segmenters that cut at separators or markers in the text. Each step keeps the separator that follows it.

- `paragraph` (default; the ProcessBench convention): blank lines separate steps.
- `lines`: every line is a step (runs of line breaks are one separator).
- `numbered`: a step starts at each line that opens with a step marker: "Step 3:", "3.", "3)", "**Step 3**".
- `sentences`: a step ends after ".", "!" or "?" followed by whitespace, and at every line break; a decimal
  point ("3.5") does not end a sentence.
"""

from __future__ import annotations

import re

import pyarrow as pa

from sgpo_data.segmenters.base import SEGMENTERS, Segmenter, SegmenterOptions, Texts
from sgpo_data.segmenters.batch import split_at_line_breaks

# A run of blank lines: a line break, then lines holding only whitespace (spaces, tabs, the \r of
# Windows line ends, ...), then a line break. Several blank lines in a row are one separator.
_BLANK_LINES_RE = re.compile(r"(?:\n[^\S\n]*)+\n")
_LINE_BREAKS_RE = re.compile(r"\n(?:[^\S\n]*\n)*")
_STEP_MARKER_RE = re.compile(r"^[^\S\n]*(?:[*#]+[^\S\n]*)?(?:step[^\S\n]*\d+\b|\d+[.)](?!\d))", re.IGNORECASE | re.MULTILINE)
# A sentence end starts only at the first of a run of ".!?": tried again inside a run that no whitespace follows,
# it would rescan the rest of the run each time (quadratic on a long run of periods).
_SENTENCE_END_RE = re.compile(r"(?<![.!?])[.!?]+[\"')\]]*\s+|\n\s*")


def _ends(pattern: re.Pattern, text: str) -> list[int]:
    return [m.end() for m in pattern.finditer(text)]


class _LineBreakSegmenter(Segmenter):
    """Cuts after runs of at least `newlines` line breaks; `split_many` cuts a whole column at once."""
    newlines: int

    def split_many(self, texts: Texts) -> pa.ListArray:
        if self.options.think != "both" or self.options.min_chars:
            return super().split_many(texts)
        return split_at_line_breaks(texts, self.newlines, self.options.max_steps)


@SEGMENTERS.register("paragraph", options=SegmenterOptions)
class ParagraphSegmenter(_LineBreakSegmenter):
    """A step is a paragraph: text between blank lines (as in ProcessBench)."""
    newlines = 2

    def boundaries(self, text: str) -> list[int]:
        return _ends(_BLANK_LINES_RE, text)


@SEGMENTERS.register("lines", options=SegmenterOptions)
class LineSegmenter(_LineBreakSegmenter):
    """A step is a line."""
    newlines = 1

    def boundaries(self, text: str) -> list[int]:
        return _ends(_LINE_BREAKS_RE, text)


@SEGMENTERS.register("numbered", options=SegmenterOptions)
class NumberedSegmenter(Segmenter):
    """A step starts at each marker `Step 3`, `3.` or `3)` at the start of a line."""

    def boundaries(self, text: str) -> list[int]:
        return [m.start() for m in _STEP_MARKER_RE.finditer(text)]


@SEGMENTERS.register("sentences", options=SegmenterOptions)
class SentenceSegmenter(Segmenter):
    """A step is a sentence (or a line)."""

    def boundaries(self, text: str) -> list[int]:
        return _ends(_SENTENCE_END_RE, text)
