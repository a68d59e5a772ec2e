"""Pull the final answer out of a free-form response: pure Python, no sympy, cheap enough for every row.

Priority (first rule that finds something wins, and within a rule the *last* occurrence wins, because
models restate and correct themselves before concluding):
  1. `\\boxed{...}` / `\\fbox{...}` with balanced braces (nested braces fine);
  2. `#### x` (GSM8K style), the rest of the line;
  3. "the answer is x", "final answer is x", "answer: x" (any case), up to the end of the sentence;
  4. optionally, the last number in the text (`1,234` becomes `1234`).
"""

from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*(?=\{)|\\boxed[ \t]+(?=[^\s{$])")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
# "(the|final) answer is" or "answer:"; markdown bold around the label ("**Final Answer:** 4") is fine.
# The answer may start on the next line ("Final answer:\n42"). It is read in a lookahead so that a later
# phrase on the same line ("the answer is 1. No, the answer is 2.") is still found.
_PHRASE_RE = re.compile(
    r"(?:\b(?:final|the)\s+answer\s*(?:\*\*)?\s*(?:is\b|:)|\banswer\s*(?:\*\*)?\s*:)[\s:*]*(?=([^\n]*))",
    re.IGNORECASE,
)
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)")  # a period that ends a sentence, not the one in 3.5
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)\]}])-)?"  # a minus sign, unless it is a binary minus as in 5-3 or x-1
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def extract_answer(text: str, last_number_fallback: bool = True) -> str | None:
    """The response's final answer as a string, or None when nothing answer-like is found."""
    for rule in (_last_boxed, _last_hashes, _last_phrase):
        answer = _clean(rule(text))
        if answer:
            return answer
    if last_number_fallback:
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1].replace(",", "")
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the last box; a box nested inside another counts as part of the outer one."""
    found, pos = None, 0
    while (m := _BOX_RE.search(text, pos)) is not None:
        if text[m.end() : m.end() + 1] == "{":
            close = _matching_brace(text, m.end())
            if close is None:  # unbalanced (e.g. a truncated response): look for a later box
                pos = m.end()
                continue
            found, pos = text[m.end() + 1 : close], close + 1
        else:  # "\boxed 5": one token
            token = re.match(r"[^\s$]+", text[m.end() :]).group(0)
            found, pos = token, m.end() + len(token)
    return found


def _matching_brace(text: str, open_idx: int) -> int | None:
    depth, i = 0, open_idx
    while i < len(text):
        c = text[i]
        if c == "\\":  # an escaped character (\{, \}, \\) never opens or closes a group
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _last_hashes(text: str) -> str | None:
    matches = [m.group(1) for m in _HASH_RE.finditer(text) if m.group(1).strip()]
    return matches[-1] if matches else None


def _last_phrase(text: str) -> str | None:
    for m in reversed(list(_PHRASE_RE.finditer(text))):
        answer = _SENTENCE_END_RE.split(m.group(1), maxsplit=1)[0]
        if _clean(answer):
            return answer
    return None


def _clean(answer: str | None) -> str | None:
    """Strip whitespace, `$`, `**`, `\\(`/`\\)` and a sentence's final period from both ends."""
    if answer is None:
        return None
    prev = None
    while prev != answer:
        prev = answer
        answer = answer.strip().strip("$").removeprefix("\\$").rstrip(".")
        for wrap in ("**", "\\(", "\\)", "\\[", "\\]"):
            answer = answer.removeprefix(wrap).removesuffix(wrap)
    if _THOUSANDS_RE.fullmatch(answer):  # "1,234" is one number, not a pair
        answer = answer.replace(",", "")
    return answer or None
