"""The experiment's task: running totals of a chain of operations modulo M, every step checkable exactly.

A problem is a start value and K operations, all numbers written with the same number of digits
(`37+45+12+08` for M = 100); the solution is one running total per line (`82`, `70`, `78`) and the last line is
the answer. An answer is one of M values, so guessing it is right 1 time in M. The solution path is unique, so
the `chain` judge (first line that differs from the reference) is an exact step judge here.

The policy reads characters: `CharVocab` maps text to ids and back. A prompt is the problem padded on the right
to a fixed width, then `:`, so that every prompt has the same length and the k-th operation sits at the same
position in every prompt; a response is the solution's lines and the end mark `$`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sgpo_data.judges.chain import first_wrong_step

PAD, END, PROMPT_END = "_", "$", ":"
_SYMBOLS = "0123456789+-*=\n" + PROMPT_END + END
_APPLY = {"+": lambda a, b, m: (a + b) % m, "-": lambda a, b, m: (a - b) % m, "*": lambda a, b, m: (a * b) % m}


@dataclass(frozen=True)
class Problem:
    text: str  # the chain, e.g. "37+45-12+08"
    solution: str  # running totals, one per line
    answer: str  # the last running total

    @property
    def num_steps(self) -> int:
        return self.solution.count("\n") + 1


class ChainTask:
    """Problems with `min_ops`..`max_ops` operations drawn from `ops`, values modulo `modulus`."""

    def __init__(self, modulus: int, ops: str, min_ops: int, max_ops: int):
        self.modulus, self.ops, self.min_ops, self.max_ops = modulus, ops, min_ops, max_ops
        self.width = len(str(modulus - 1))
        self.prompt_width = self.width + (1 + self.width) * max_ops + 1
        self.max_response = (self.width + 1) * max_ops + 2  # every line, the end mark, one spare token

    def number(self, value: int) -> str:
        return str(value).zfill(self.width)

    def problem(self, rng: random.Random, num_ops: int | None = None, slip: float = 0.0) -> Problem:
        """A problem and its solution; with `slip` > 0, the solution of a weak solver instead: each `+` or `-`
        step is done without carries (digit by digit, modulo 10) with probability `slip`, and the next line
        goes on from the line as written. Only the warm-up reads such solutions."""
        num_ops = num_ops or rng.randint(self.min_ops, self.max_ops)
        value = rng.randrange(self.modulus)
        text, totals = self.number(value), []
        for _ in range(num_ops):
            op, operand = rng.choice(self.ops), rng.randrange(self.modulus)
            if slip and op in "+-" and rng.random() < slip:
                value = self.without_carry(value, operand, op)
            else:
                value = _APPLY[op](value, operand, self.modulus)
            text += op + self.number(operand)
            totals.append(self.number(value))
        return Problem(text, "\n".join(totals), totals[-1])

    def without_carry(self, a: int, b: int, op: str) -> int:
        """`a op b` digit by digit modulo 10: the carries (or borrows) forgotten, wrapped to the modulus."""
        digits = [_APPLY[op](int(x), int(y), 10) for x, y in zip(self.number(a), self.number(b))]
        return int("".join(map(str, digits))) % self.modulus

    def problems(self, seed: int, n: int) -> list[Problem]:
        """`n` problems from `seed`, chain lengths cycling through min_ops..max_ops (a held-out set that is
        balanced by length)."""
        rng = random.Random(seed)
        lengths = range(self.min_ops, self.max_ops + 1)
        return [self.problem(rng, lengths[i % len(lengths)]) for i in range(n)]

    def prompt(self, problem: Problem) -> str:
        return problem.text.ljust(self.prompt_width - 1, PAD) + PROMPT_END


def progress(response: str, problem: Problem) -> int:
    """Steps right before the first error: the problem's number of steps for a right answer."""
    steps, reference = response.split("\n"), problem.solution.split("\n")
    k = first_wrong_step(steps, reference)
    return len(reference) if k < 0 and len(steps) == len(reference) else (len(steps) if k < 0 else k)


class CharVocab:
    """Character ids; id 0 is the padding character."""

    def __init__(self):
        self.symbols = PAD + _SYMBOLS
        self.ids = {c: i for i, c in enumerate(self.symbols)}
        self.pad_id, self.end_id = 0, self.ids[END]

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        return [self.ids[c] for c in text]

    def decode_response(self, ids: list[int]) -> tuple[str, list[int]]:
        """The response text before the end mark, and the ids the policy produced up to and with the end mark
        (all of them when it never ended)."""
        if self.end_id in ids:
            ids = ids[: ids.index(self.end_id) + 1]
            return "".join(self.symbols[i] for i in ids[:-1]), ids
        return "".join(self.symbols[i] for i in ids), ids
