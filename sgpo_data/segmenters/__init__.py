"""Step segmenters, chosen by name: `get_segmenter("paragraph")`."""

from __future__ import annotations

from sgpo_data.registry import Registry
from sgpo_data.segmenters.base import Segmenter, strip_steps

SEGMENTERS: Registry[Segmenter] = Registry("segmenter")


def get_segmenter(name: str, **kwargs) -> Segmenter:
    return SEGMENTERS.get(name, **kwargs)


# Registers the implementations.
from sgpo_data.segmenters import paragraph  # noqa: E402,F401

__all__ = ["SEGMENTERS", "Segmenter", "get_segmenter", "strip_steps"]
