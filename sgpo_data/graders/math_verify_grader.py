"""Outcome grading with math-verify, at bulk speed and with an exact per-row timeout.

Each row is decided by the cheapest step that can:
1. `fast_verdict`, pure Python in the calling process: identical answers, and plain numbers (`42`, `1,000`,
   `-3.5`, `\\frac{3}{2}`, `3/2`, `$` around) compared exactly. It answers only where math-verify agrees and
   leaves everything else to it;
2. the verdicts math-verify already gave for the same (answer, reference) pair in this grader's lifetime;
3. math-verify in spawned worker processes, one per CPU (`workers.py`). math-verify's own timeouts use
   `signal.alarm`, which only works in the main thread and cannot stop work stuck in C code, so they are
   disabled and the pool times each row: a row that runs past `timeout_s` gets status `timeout` and only its
   worker is replaced.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections import OrderedDict
from fractions import Fraction
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.errors import SgpoError
from sgpo_data.graders.base import GRADERS, Grader, GradeResult
from sgpo_data.graders.extract import extract_answer
from sgpo_data.graders.workers import WorkerPool, available_cpus
from sgpo_data.schema import GradeStatus


def verify_answer(reference: str, predicted: str) -> bool:
    """Runs in the worker: does `predicted` equal `reference` mathematically?"""
    from math_verify import verify

    gold = _parse(reference)
    if not gold:  # math-verify cannot read the reference (free text, odd notation): compare as strings
        return _normalise(reference) == _normalise(predicted)
    return bool(verify(gold, _parse(predicted), timeout_seconds=None))


@functools.lru_cache(maxsize=4096)
def _parse(answer: str) -> list:
    """math-verify's reading of an answer. Parsing is most of a row's time (verify is a tenth of it) and a
    reference comes back for every sample of its prompt, so each worker keeps what it parsed; verify does not
    modify what it is given."""
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=None)


def _normalise(s: str) -> str:
    return re.sub(r"(?<=\d)\.0+$", "", s.strip().replace(",", ""))  # "1,000.0" == "1000"


def _warm_worker() -> None:
    """Import the heavy libraries once and silence the warning about disabled signal timeouts."""
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True


# A plain number as math-verify reads it: an integer (thousands separated by `,` or `{,}` in groups of three;
# "1,23" is the set {1, 23} to math-verify), a decimal, \frac{a}{b} (also \dfrac, \tfrac) or a/b.
_NUMBER_RE = re.compile(
    r"(?P<sign>[-+]?)(?:"
    r"(?P<int>\d+|\d{1,3}(?:(?:,|\{,\})\d{3})+)(?:\.(?P<decimals>\d+))?"
    r"|\.(?P<only_decimals>\d+)"
    r"|\\[dt]?frac\{(?P<num>-?\d+)\}\{(?P<den>\d+)\}"
    r"|(?P<slash_num>\d+)/(?P<slash_den>\d+))"
)
DEFAULT_MAX_WORKERS = 8  # on a large node, one sympy process per core would cost GBs for no gain in a stage
_MAX_DIGITS = 15  # beyond this sympy's floats (15 significant digits) may round: leave those to math-verify
_FLOAT_GAP = 1e-4  # math-verify rounds floats to 6 decimals (1/3 == 0.333333): a closer pair is left to it


def _as_number(s: str) -> tuple[Fraction, bool] | None:
    """`s` as an exact number if it is a plain one, with whether it is written as an integer; else None."""
    s = s.strip().strip("$").strip()
    m = _NUMBER_RE.fullmatch(s)
    if m is None or sum(c.isdigit() for c in s) > _MAX_DIGITS:
        return None
    sign = -1 if m["sign"] == "-" else 1
    if m["int"] is not None:
        digits = m["int"].replace("{,}", "").replace(",", "")
        if m["decimals"] is None:
            return sign * Fraction(int(digits)), True
        return sign * Fraction(f"{digits}.{m['decimals']}"), False
    if m["only_decimals"] is not None:
        return sign * Fraction(f"0.{m['only_decimals']}"), False
    num, den = (m["num"], m["den"]) if m["num"] is not None else (m["slash_num"], m["slash_den"])
    return (sign * Fraction(int(num), int(den)), False) if int(den) else None


def fast_verdict(reference: str, predicted: str) -> bool | None:
    """The verdict `verify_answer` would give, where it is certain without sympy; None where it is not."""
    if reference.strip() == predicted.strip():
        return True  # math-verify also compares the extracted strings, and identical ones are equal
    a, b = _as_number(reference), _as_number(predicted)
    if a is None or b is None:
        return None
    (x, x_is_int), (y, y_is_int) = a, b
    if x == y:
        return True
    if x_is_int and y_is_int:
        return False  # sympy compares integers exactly
    return False if abs(x - y) > _FLOAT_GAP * max(1, abs(x), abs(y)) else None


class MathVerifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(5.0, gt=0, description="per-row time limit for math-verify's comparison")
    last_number_fallback: bool = Field(True, description="use the response's last number when no answer marker is found")
    workers: int | None = Field(None, ge=1, description="math-verify worker processes (about 110 MB each); default: "
                                "one per CPU this process may use, at most 8")
    cache_size: int = Field(
        100_000, ge=0, description="verdicts of repeated (answer, reference) pairs kept for reuse; 0: no cache"
    )


@GRADERS.register("math_verify", options=MathVerifyOptions)
class MathVerifyGrader(Grader):
    """Extract the final answer (see `extract.py`) and compare it to the reference with math-verify.

    A missing reference gives `no_reference` (verdict null); a response with no answer is wrong
    (`no_answer`, verdict False); a row that runs past `timeout_s` or raises gives `timeout` / `error`
    with a null verdict. `_work_fn` replaces `verify_answer` for fault-injection tests only (then every row
    goes to it: no fast path); it must be a picklable module-level function.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        last_number_fallback: bool = True,
        workers: int | None = None,
        cache_size: int = 100_000,
        _work_fn: Callable[[str, str], bool] = verify_answer,
    ):
        if importlib.util.find_spec("math_verify") is None:
            raise SgpoError(
                "grader 'math_verify' needs math-verify; install it: pip install 'math-verify[antlr4_13_2]'"
            )
        self.last_number_fallback = last_number_fallback
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], bool] = OrderedDict()  # least recently used first
        self._fast = fast_verdict if _work_fn is verify_answer else None
        self._pool = WorkerPool(
            _work_fn, _warm_worker, workers or min(available_cpus(), DEFAULT_MAX_WORKERS), timeout_s,
            name="grader 'math_verify'", hint="check that math-verify imports",
        )

    def grade(self, responses: list[str], references: list[str | None]) -> list[GradeResult]:
        if len(responses) != len(references):
            raise SgpoError(
                f"grader: {len(responses)} responses but {len(references)} references; pass one per row"
            )
        results: list[GradeResult | None] = []
        to_verify: dict[tuple[str, str], list[int]] = {}  # each distinct pair goes to math-verify once
        for i, (response, reference) in enumerate(zip(responses, references)):
            pred = extract_answer(response or "", self.last_number_fallback)
            reference = (reference or "").strip()
            if not reference:
                results.append(GradeResult(pred, None, GradeStatus.NO_REFERENCE))
            elif pred is None:
                results.append(GradeResult(None, False, GradeStatus.NO_ANSWER))
            elif (verdict := self._known_verdict(reference, pred)) is not None:
                results.append(GradeResult(pred, verdict, GradeStatus.OK))
            else:
                results.append(None)
                to_verify.setdefault((reference, pred), []).append(i)
        pairs = list(to_verify)
        for pair, (status, verdict) in zip(pairs, self._pool.run(pairs)):
            ok = status == GradeStatus.OK
            if ok:
                self._remember(pair, bool(verdict))
            for i in to_verify[pair]:
                results[i] = GradeResult(pair[1], bool(verdict) if ok else None, status)
        return results  # type: ignore[return-value]

    def _known_verdict(self, reference: str, pred: str) -> bool | None:
        if self._fast is not None and (verdict := self._fast(reference, pred)) is not None:
            return verdict
        verdict = self._cache.get((reference, pred))
        if verdict is not None:
            self._cache.move_to_end((reference, pred))
        return verdict

    def _remember(self, pair: tuple[str, str], verdict: bool) -> None:
        if self.cache_size:
            self._cache[pair] = verdict
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def warm(self) -> None:
        self._pool.start()

    def close(self) -> None:
        self._pool.close()
