"""The math-verify grader against the real math-verify (no mocks), including its worker-process timeout."""

import threading
import time

import pytest

from sgpo_data.errors import SgpoError
from sgpo_data.graders import GradeResult, get_grader
from sgpo_data.schema import GradeStatus

# sympy tries to evaluate this power tower when comparing it: it runs for minutes (a real slow input).
SLOW = "\\boxed{9^{9^{9^{9^{9}}}}}"


@pytest.fixture(scope="module")
def grader():
    with get_grader("math_verify", {"timeout_s": 10.0}) as g:
        yield g


def test_verdicts(grader):
    results = grader.grade(
        ["The answer is 27.", "\\boxed{\\frac{1}{2}}", "\\boxed{3}", "I have no idea.", "It is 5", "#### 1,000"],
        ["27", "0.5", "4", "4", None, "1000"],
    )
    assert results == [
        GradeResult("27", True, GradeStatus.OK),
        GradeResult("\\frac{1}{2}", True, GradeStatus.OK),
        GradeResult("3", False, GradeStatus.OK),
        GradeResult(None, False, GradeStatus.NO_ANSWER),  # no answer is wrong, not ungradable
        GradeResult("5", None, GradeStatus.NO_REFERENCE),  # the answer is still extracted
        GradeResult("1000", True, GradeStatus.OK),
    ]


def test_empty_reference_and_empty_batch(grader):
    assert grader.grade(["\\boxed{1}"], ["  "]) == [GradeResult("1", None, GradeStatus.NO_REFERENCE)]
    assert grader.grade([], []) == []


def test_unparseable_reference_falls_back_to_string_comparison(grader):
    # math-verify reads nothing from "}{"; the grader then compares normalised strings
    assert [r.is_correct for r in grader.grade(["#### }{", "#### {}"], ["}{", "}{"])] == [True, False]


def test_grades_outside_the_main_thread(grader):
    out, errors = [], []

    def work():
        try:
            out.extend(grader.grade(["The answer is 27.", "\\boxed{3}"], ["27", "4"]))
        except Exception as e:  # pragma: no cover - the failure is reported below
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert errors == []
    assert [(r.is_correct, r.status) for r in out] == [(True, "ok"), (False, "ok")]


def test_slow_row_times_out_and_later_rows_still_grade():
    with get_grader("math_verify", {"timeout_s": 1.0}) as g:
        g.grade(["\\boxed{1}"], ["1"])  # start and warm the worker outside the timed call
        start = time.monotonic()
        results = g.grade(["\\boxed{2}", SLOW, "The answer is 27.", "\\boxed{3}"], ["2", "4", "27", "4"])
        elapsed = time.monotonic() - start
    assert results == [
        GradeResult("2", True, GradeStatus.OK),
        GradeResult("9^{9^{9^{9^{9}}}}", None, GradeStatus.TIMEOUT),
        GradeResult("27", True, GradeStatus.OK),
        GradeResult("3", False, GradeStatus.OK),
    ]
    assert elapsed < 1.0 + 10  # the timeout plus one fresh worker, not the minutes the row would take


def _raise(reference, predicted):
    raise ValueError("boom")


def test_exception_in_worker_is_an_error_row():
    with get_grader("math_verify", _work_fn=_raise) as g:
        assert g.grade(["\\boxed{1}", "nothing"], ["1", "1"]) == [
            GradeResult("1", None, GradeStatus.ERROR),
            GradeResult(None, False, GradeStatus.NO_ANSWER),
        ]


def test_bad_calls_are_errors():
    with pytest.raises(SgpoError, match="math_verify"):
        get_grader("nope")
    with get_grader("math_verify") as g, pytest.raises(SgpoError, match="2 responses but 1 references"):
        g.grade(["a", "b"], ["1"])


def test_close_is_idempotent_and_grader_reusable():
    g = get_grader("math_verify")
    assert g.grade(["\\boxed{2}"], ["2"])[0].is_correct is True
    g.close()
    g.close()
    assert g.grade(["\\boxed{2}"], ["3"])[0].is_correct is False  # a fresh worker after close
    g.close()
