"""Outcome grading with math-verify, with a per-row timeout that also works outside the main thread.

math-verify's own timeouts use `signal.alarm`, which only works in the main thread, so they are disabled
here; instead the symbolic work runs in one spawned worker process, and a row that runs past `timeout_s`
gets the worker terminated (a fresh one is started for the next row) and status `timeout`.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import re
from multiprocessing.pool import Pool
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.errors import SgpoError
from sgpo_data.graders import GRADERS
from sgpo_data.graders.base import Grader, GradeResult
from sgpo_data.graders.extract import extract_answer
from sgpo_data.schema import GradeStatus

_WARMUP_TIMEOUT_S = 60.0  # a fresh spawned worker imports sympy + math-verify: seconds, not milliseconds


def verify_answer(reference: str, predicted: str) -> bool:
    """Runs in the worker: does `predicted` equal `reference` mathematically?"""
    from math_verify import parse, verify

    gold = parse("\\boxed{" + reference + "}", parsing_timeout=None)
    if not gold:  # math-verify cannot read the reference (free text, odd notation): compare as strings
        return _normalise(reference) == _normalise(predicted)
    pred = parse("\\boxed{" + predicted + "}", parsing_timeout=None)
    return bool(verify(gold, pred, timeout_seconds=None))


def _normalise(s: str) -> str:
    return re.sub(r"(?<=\d)\.0+$", "", s.strip().replace(",", ""))  # "1,000.0" == "1000"


def _warm_worker() -> None:
    """Import the heavy libraries once and silence the warning about disabled signal timeouts."""
    import math_verify.grader
    import math_verify.parser

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True


class MathVerifyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(5.0, gt=0, description="per-row time limit for extraction + verification")
    last_number_fallback: bool = Field(True, description="use the response's last number when no answer marker is found")


@GRADERS.register("math_verify", options=MathVerifyOptions)
class MathVerifyGrader(Grader):
    """Extract the final answer (see `extract.py`) and compare it to the reference with math-verify.

    A missing reference gives `no_reference` (verdict null); a response with no answer is wrong
    (`no_answer`, verdict False); a row that runs past `timeout_s` or raises gives `timeout` / `error`
    with a null verdict. `_work_fn` replaces `verify_answer` for fault-injection tests only; it must be
    a picklable module-level function.
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        last_number_fallback: bool = True,
        _work_fn: Callable[[str, str], bool] = verify_answer,
    ):
        if importlib.util.find_spec("math_verify") is None:
            raise SgpoError(
                "grader 'math_verify' needs math-verify; install it: pip install 'math-verify[antlr4_13_2]'"
            )
        self.timeout_s = timeout_s
        self.last_number_fallback = last_number_fallback
        self._work_fn = _work_fn
        self._pool: Pool | None = None

    def grade(self, responses: list[str], references: list[str | None]) -> list[GradeResult]:
        if len(responses) != len(references):
            raise SgpoError(
                f"grader: {len(responses)} responses but {len(references)} references; pass one per row"
            )
        results = []
        for response, reference in zip(responses, references):
            pred = extract_answer(response or "", self.last_number_fallback)
            if reference is None or not reference.strip():
                results.append(GradeResult(pred, None, GradeStatus.NO_REFERENCE))
            elif pred is None:
                results.append(GradeResult(None, False, GradeStatus.NO_ANSWER))
            else:
                results.append(self._verify(reference.strip(), pred))
        return results

    def _verify(self, reference: str, pred: str) -> GradeResult:
        # One task per row: the symbolic work (~1 ms a row) dwarfs the round trip to the worker, so
        # queueing rows ahead measured no faster, and one task per row times each row exactly.
        task = self._warm_pool().apply_async(self._work_fn, (reference, pred))
        try:
            return GradeResult(pred, bool(task.get(timeout=self.timeout_s)), GradeStatus.OK)
        except multiprocessing.TimeoutError:
            self._terminate()  # the worker may stay stuck in sympy for hours: replace it
            return GradeResult(pred, None, GradeStatus.TIMEOUT)
        except Exception:  # noqa: BLE001 - a bad row is data, not a crash
            return GradeResult(pred, None, GradeStatus.ERROR)

    def _warm_pool(self) -> Pool:
        """The worker pool, started on first use (and after a timeout) and warmed before any row is
        timed: a fresh spawned worker spends a while importing sympy, which must not count as a row's
        time. A worker that cannot start at all is a broken environment, not a bad row."""
        if self._pool is None:
            pool = multiprocessing.get_context("spawn").Pool(1)
            try:
                pool.apply_async(_warm_worker).get(timeout=_WARMUP_TIMEOUT_S)
            except Exception as e:
                pool.terminate()
                raise SgpoError(
                    f"grader 'math_verify': its worker process did not start ({type(e).__name__}: {e}); "
                    "check that math-verify imports, and that a script using the grader runs its code "
                    "under `if __name__ == '__main__':` (the worker is spawned and re-imports it)"
                ) from e
            self._pool = pool
        return self._pool

    def warm(self) -> None:
        self._warm_pool()

    def _terminate(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def close(self) -> None:
        self._terminate()
