"""Step segmenters, chosen by name with their options: `get_segmenter("lines", {"min_chars": 8})`."""

from __future__ import annotations

from sgpo_data.registry import Registry
from sgpo_data.segmenters.base import Segmenter, SegmenterOptions, strip_steps

SEGMENTERS: Registry[Segmenter] = Registry("segmenter")


def get_segmenter(name: str, options: dict | None = None, key: str = "judge.segmenter_options") -> Segmenter:
    """The segmenter `name`, its options validated (a bad key is one line naming `key.<field>`)."""
    return SEGMENTERS.get(name, options=SEGMENTERS.options(name, options, key))


# Registers the implementations.
from sgpo_data.segmenters import paragraph  # noqa: E402,F401

__all__ = ["SEGMENTERS", "Segmenter", "SegmenterOptions", "get_segmenter", "strip_steps"]
