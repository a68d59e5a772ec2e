"""Step segmenters, chosen by name with their options: `get_segmenter("lines", {"min_chars": 8})`.

Every segmenter takes the shared `SegmenterOptions` (min_chars, max_steps, think); `segment(text)` gives
`Segmented(prefix, steps, suffix)`, `split(text)` the judged steps alone."""

from __future__ import annotations

from sgpo_data.registry import Registry
from sgpo_data.segmenters.base import Segmented, Segmenter, SegmenterOptions, judged_span, strip_steps

SEGMENTERS: Registry[Segmenter] = Registry("segmenter")


def get_segmenter(name: str, options: dict | None = None, key: str = "judge.segmenter.options") -> Segmenter:
    """The segmenter `name`, its options validated (a bad key is one line naming `key.<field>`)."""
    return SEGMENTERS.get(name, options=SEGMENTERS.options(name, options, key))


# Registers the implementations.
from sgpo_data.segmenters import paragraph  # noqa: E402,F401

__all__ = ["SEGMENTERS", "Segmented", "Segmenter", "SegmenterOptions", "get_segmenter", "judged_span", "strip_steps"]
