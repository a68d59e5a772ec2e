"""Strict parsing of a judge's answer: the whole reply must be one integer in -1..K-1 (a group reply: one line
`response_<i>: <n>` per response, in order)."""

from __future__ import annotations

import re

from sgpo_data.judges.base import Verdict
from sgpo_data.schema import JudgeStatus

_INTEGER = re.compile(r"-?\d+")
_GROUP_LINE = re.compile(r"response_(\d+)\s*:\s*(-?\d+)\.?")
_MAX_DIGITS = 18  # a longer number is no step index (and past 4300 digits int() itself refuses it)


def _index(text: str) -> int | None:
    """The integer `text` (already matched by -?\\d+), or None when it is too long to be an index."""
    digits = text.lstrip("-").lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        return None
    return -int(digits) if text.startswith("-") else int(digits)


def parse_first_error(raw: str | None, num_steps: int) -> Verdict:
    """`"2"` → step 2; `"-1"` → no error; anything else (prose, several numbers, out of range) → parse_error."""
    text = (raw or "").strip().rstrip(".").strip()
    if not _INTEGER.fullmatch(text):
        return Verdict(None, JudgeStatus.PARSE_ERROR, raw)
    index = _index(text)
    if index is None or not -1 <= index < num_steps:
        return Verdict(None, JudgeStatus.PARSE_ERROR, raw)
    return Verdict(index, JudgeStatus.OK, raw)


def parse_group(raw: str | None, num_steps: list[int]) -> list[Verdict]:
    """One verdict per response from `"response_0: 2\\nresponse_1: -1"`. The reply must have exactly one line per
    response, in order, each index in range; otherwise every response is a parse error (raw kept on each)."""
    lines = [line.strip() for line in (raw or "").strip().splitlines() if line.strip()]
    failed = [Verdict(None, JudgeStatus.PARSE_ERROR, raw) for _ in num_steps]
    if len(lines) != len(num_steps):
        return failed
    verdicts = []
    for j, (line, k) in enumerate(zip(lines, num_steps)):
        match = _GROUP_LINE.fullmatch(line)
        position, index = (_index(match.group(1)), _index(match.group(2))) if match else (None, None)
        if position != j or index is None or not -1 <= index < k:
            return failed
        verdicts.append(Verdict(index, JudgeStatus.OK, raw))
    return verdicts
