"""Paragraph steps (the ProcessBench convention): steps are separated by blank lines."""

from __future__ import annotations

import re

from sgpo_data.segmenters import SEGMENTERS
from sgpo_data.segmenters.base import Segmenter

# A run of blank lines: a line break, then lines holding only whitespace (spaces, tabs, the \r of
# Windows line ends, ...), then a line break. Several blank lines in a row are one separator.
_BLANK_LINES_RE = re.compile(r"(?:\n[^\S\n]*)+\n")
_CONTENT_RE = re.compile(r"\S")


@SEGMENTERS.register("paragraph")
class ParagraphSegmenter(Segmenter):
    """Each step keeps the separator that follows it; whitespace before the first paragraph belongs to the
    first step, whitespace after the last to the last step; a text with no content is one step."""

    def split(self, text: str) -> list[str]:
        first = _CONTENT_RE.search(text)
        if first is None:
            return [text]
        steps, start = [], 0
        for sep in _BLANK_LINES_RE.finditer(text, first.start()):
            if _CONTENT_RE.search(text, sep.end()) is None:  # only trailing whitespace is left
                break
            steps.append(text[start : sep.end()])
            start = sep.end()
        steps.append(text[start:])
        return steps
