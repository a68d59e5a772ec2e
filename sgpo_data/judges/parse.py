"""Strict parsing of a judge's answer: the whole reply must be one integer in -1..K-1."""

from __future__ import annotations

import re

from sgpo_data.judges.base import Verdict
from sgpo_data.schema import JudgeStatus

_INTEGER = re.compile(r"-?\d+")


def parse_first_error(raw: str | None, num_steps: int) -> Verdict:
    """`"2"` → step 2; `"-1"` → no error; anything else (prose, several numbers, out of range) → parse_error."""
    text = (raw or "").strip().rstrip(".").strip()
    if not _INTEGER.fullmatch(text):
        return Verdict(None, JudgeStatus.PARSE_ERROR, raw)
    index = int(text)
    if not -1 <= index < num_steps:
        return Verdict(None, JudgeStatus.PARSE_ERROR, raw)
    return Verdict(index, JudgeStatus.OK, raw)
