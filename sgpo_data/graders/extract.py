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

# Every pattern here runs in time linear in the text (no nested quantifiers over the same characters), and
# every loop below visits each character a bounded number of times: responses are untrusted and can be long.
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*(?=\{)|\\boxed[ \t]+(?=[^\s{$])")
_BOX_TOKEN_RE = re.compile(r"[^\s$]+")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)  # an escaped character (\{, \}, \\) or a brace
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
# "(the|final) answer is" or "answer:"; markdown bold around the label ("**Final Answer:** 4") is fine.
# The answer may start on the next line ("Final answer:\n42"). The label alone is matched, so that a later
# phrase on the same line ("the answer is 1. No, the answer is 2.") is still found.
_PHRASE_RE = re.compile(
    r"(?:\b(?:final|the)\s+answer\s*(?:\*\*\s*)?(?:is\b|:)|\banswer\s*(?:\*\*\s*)?:)[\s:*]*",
    re.IGNORECASE,
)
# The answer after a label: up to the end of its sentence (a period before whitespace or the end of the text,
# not the one in 3.5) or of its line.
_PHRASE_ANSWER_RE = re.compile(r"[^\n]*?(?=\.(?:\s|\Z)|\n|\Z)")
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
    found, pos, closing = None, 0, None
    while (m := _BOX_RE.search(text, pos)) is not None:
        if text[m.end() : m.end() + 1] == "{":
            if closing is None:
                closing = _closing_braces(text)
            close = closing.get(m.end())
            if close is None:  # unbalanced (e.g. a truncated response): look for a later box
                pos = m.end()
                continue
            found, pos = text[m.end() + 1 : close], close + 1
        else:  # "\boxed 5": one token
            token = _BOX_TOKEN_RE.match(text, m.end())
            found, pos = token.group(0), token.end()
    return found


def _closing_braces(text: str) -> dict[int, int]:
    """The index of each `{`'s matching `}`, in one pass over the text; an escaped character (\\{, \\}, \\\\) never
    opens or closes a group, and a `{` that is never closed has no entry."""
    closing, opened = {}, []
    for m in _BRACE_RE.finditer(text):
        brace = m.group()
        if brace == "{":
            opened.append(m.start())
        elif brace == "}" and opened:
            closing[opened.pop()] = m.start()
    return closing


def _last_hashes(text: str) -> str | None:
    matches = [m.group(1) for m in _HASH_RE.finditer(text) if m.group(1).strip()]
    return matches[-1] if matches else None


def _last_phrase(text: str) -> str | None:
    for m in reversed(list(_PHRASE_RE.finditer(text))):
        answer = _PHRASE_ANSWER_RE.match(text, m.end()).group(0)
        if _clean(answer):
            return answer
    return None


_WRAPS = ("**", "\\(", "\\)", "\\[", "\\]")


def _clean(answer: str | None) -> str | None:
    """Strip whitespace, `$`, `**`, `\\(`/`\\)` and a sentence's final period from both ends."""
    if answer is None:
        return None
    start, end, prev = 0, len(answer), None  # the answer is answer[start:end]: nothing is copied until the end
    while prev != (start, end):
        prev = start, end
        while start < end and answer[start].isspace():
            start += 1
        while end > start and answer[end - 1].isspace():
            end -= 1
        while start < end and answer[start] == "$":
            start += 1
        while end > start and answer[end - 1] == "$":
            end -= 1
        if answer.startswith("\\$", start, end):
            start += 2
        while end > start and answer[end - 1] == ".":
            end -= 1
        for wrap in _WRAPS:
            if answer.startswith(wrap, start, end):
                start += len(wrap)
            if answer.endswith(wrap, start, end):
                end -= len(wrap)
    answer = answer[start:end]
    if _THOUSANDS_RE.fullmatch(answer):  # "1,234" is one number, not a pair
        answer = answer.replace(",", "")
    return answer or None
