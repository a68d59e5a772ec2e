"""Step segmenters, chosen by name with their options: `get_segmenter("lines", {"min_chars": 8})`.

Every segmenter takes the shared `SegmenterOptions` (min_chars, max_steps, think); `segment(text)` gives
`Segmented(prefix, steps, suffix)`, `split(text)` the judged steps alone. Each segmenter registers itself in its
own file of this package: `@SEGMENTERS.register("name", options=SegmenterOptions)` on its class."""

from __future__ import annotations

from sgpo_data.segmenters.base import SEGMENTERS, Segmented, Segmenter, SegmenterOptions, judged_span, strip_steps


def get_segmenter(name: str, options: dict | None = None, key: str = "judge.segmenter.options") -> Segmenter:
    """The segmenter `name`, its options validated (a bad key is one line naming `key.<field>`)."""
    return SEGMENTERS.get(name, options=SEGMENTERS.options(name, options, key))

__all__ = ["SEGMENTERS", "Segmented", "Segmenter", "SegmenterOptions", "get_segmenter", "judged_span", "strip_steps"]
