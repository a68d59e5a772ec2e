"""The math-verify grader against the real math-verify (no mocks): its fast path, its cache and its worker
processes with their per-row timeout. Fault injection goes through `_work_fn`, a module-level function here.
What the fast path decides starts no worker and is in the fast tier; the tests that start workers are slow."""

import os
import threading
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo_data.errors import SgpoError
from sgpo_data.graders import GradeResult, get_grader
from sgpo_data.graders.math_verify_grader import _warm_worker, fast_verdict, verify_answer
from sgpo_data.graders.workers import WorkerPool, available_cpus
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


@pytest.mark.slow  # starts math-verify worker processes
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


@pytest.mark.slow  # starts math-verify worker processes
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


@pytest.mark.slow  # starts math-verify worker processes
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


# -- the fast path: it decides only where math-verify agrees ---------------------------------------------------------

# (reference, prediction, what the fast path says: True / False / None = left to math-verify)
FAST_CASES = [
    ("42", "42", True), ("1,000", "1000", True), ("1000", "1,000", True), ("1{,}000", "1,000", True),
    ("12,345,678", "12345678", True), ("-1,000", "-1000", True), ("007", "7", True), ("0", "-0", True),
    ("+3", "3", True), ("$42$", "42", True), ("$$42$$", "42", True), ("$ 42 $", "42", True), (" 42 ", "42", True),
    ("2.0", "2", True), ("1.50", "1.5", True), (".5", "0.5", True), ("1,000.5", "1000.5", True),
    ("\\frac{3}{2}", "\\frac{3}{2}", True), ("\\frac{3}{2}", "1.5", True), ("\\frac{3}{2}", "3/2", True),
    ("\\dfrac{3}{2}", "\\tfrac{6}{4}", True), ("-\\frac{1}{2}", "-0.5", True), ("\\frac{-1}{2}", "-0.5", True),
    ("$\\frac{3}{2}$", "\\frac{3}{2}", True), ("\\frac{100}{2}", "50", True), ("0.1", "\\frac{1}{10}", True),
    ("\\sqrt{2}", "\\sqrt{2}", True), ("yes", "yes", True), ("}{", "}{", True), ("\\frac{1}{0}", "\\frac{1}{0}", True),
    ("42", "43", False), ("1,000", "1", False), ("-3", "3", False), ("999999999999999", "999999999999998", False),
    ("\\frac{57}{2}", "57", False), ("1/3", "0.333", False), ("0.5", "0.6", False), ("\\frac{3}{2}", "-1.5", False),
    ("1/3", "0.3333", None),  # within math-verify's float rounding: it decides
    ("\\frac{1}{3}", "0.33333333", None), ("3", "3.0000001", None), ("0.000001", "0", None),
    ("1,23", "123", None),  # a set to math-verify, not a number
    ("1,0000", "10000", None), ("3.", "3", None), ("50\\%", "50", None), ("1 000", "1000", None),
    ("10000000000000000", "10000000000000001", None),  # past sympy's float precision
    ("1,000,000", "10^6", None), ("\\frac{3}{-2}", "-1.5", None), ("x+1", "1+x", None), ("yes", "no", None),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", None),
]


@pytest.fixture(scope="module")
def math_verify_here():
    _warm_worker()  # math-verify in this process, to compare the fast path with


@pytest.mark.parametrize("reference,predicted,expected", FAST_CASES)
def test_fast_path_agrees_with_math_verify(math_verify_here, reference, predicted, expected):
    assert fast_verdict(reference, predicted) is expected
    if expected is not None:
        assert verify_answer(reference.strip(), predicted) is expected


def _renders(v: Fraction) -> st.SearchStrategy[str]:
    """The ways an answer may write `v`: integers with or without separators, decimals, fractions, `$`."""
    sign, a = ("-" if v < 0 else ""), abs(v)
    forms = [f"{sign}\\frac{{{a.numerator}}}{{{a.denominator}}}", f"{sign}{a.numerator}/{a.denominator}",
             f"{sign}\\dfrac{{{2 * a.numerator}}}{{{2 * a.denominator}}}", f"{sign}{float(a):.3f}",
             f"{sign}{float(a):.6f}", f"{sign}{float(a):.8f}"]
    if a.denominator == 1:
        forms += [f"{sign}{a.numerator}", f"{sign}{a.numerator:,}", f"{sign}{a.numerator}.0", f"{sign}00{a.numerator}"]
    if v < 0:
        forms.append(f"\\frac{{-{a.numerator}}}{{{a.denominator}}}")
    return st.sampled_from(forms).flatmap(lambda f: st.sampled_from([f, f"${f}$", f" {f} "]))


_VALUES = st.sampled_from([Fraction(n, d) for n in (-1001, -3, -1, 0, 1, 2, 3, 42, 999, 1000, 1234567) for d in (1, 2, 3, 8)])


@settings(max_examples=150, deadline=None)
@given(_VALUES.flatmap(_renders), _VALUES.flatmap(_renders))
def test_fast_path_agrees_with_math_verify_on_generated_numbers(math_verify_here, reference, predicted):
    verdict = fast_verdict(reference, predicted)
    if verdict is not None:
        assert verify_answer(reference.strip(), predicted) is verdict


def test_obvious_pairs_are_graded_without_a_worker():
    g = get_grader("math_verify")
    results = g.grade(["The answer is 1,000.", "\\boxed{\\frac{3}{2}}", "\\boxed{7}", "nothing"], ["1000", "$1.5$", "8", "1"])
    assert [(r.is_correct, r.status) for r in results] == [(True, "ok"), (True, "ok"), (False, "ok"), (False, "no_answer")]
    assert g._pool._workers == []  # no worker was started: nothing went through a process
    g.close()


# -- the cache and the worker processes -------------------------------------------------------------------------

def _record(reference, predicted):
    """Note the pair in the file $SGPO_TEST_RECORD (one line per call in any worker); "boom" raises."""
    with open(os.environ["SGPO_TEST_RECORD"], "a") as f:
        f.write(f"{reference}|{predicted}\n")
    if predicted == "boom":
        raise ValueError("boom")
    return reference == predicted


@pytest.mark.slow  # starts math-verify worker processes
def test_repeated_pairs_go_to_math_verify_once(tmp_path, monkeypatch):
    record = tmp_path / "calls.txt"
    monkeypatch.setenv("SGPO_TEST_RECORD", str(record))

    def calls():
        return sorted(record.read_text().splitlines())

    with get_grader("math_verify", {"workers": 2}, _work_fn=_record) as g:
        rows = ["#### a", "#### b", "#### a", "#### a", "#### b", "#### c"]
        results = g.grade(rows, ["a"] * 6)
        assert [r.is_correct for r in results] == [True, False, True, True, False, False]
        assert calls() == ["a|a", "a|b", "a|c"]
        assert [r.is_correct for r in g.grade(["#### b", "#### a"], ["a", "a"])] == [False, True]
        assert calls() == ["a|a", "a|b", "a|c"]  # both from the cache
        # an error is not a verdict: asked again in the next call
        assert [r.status for r in g.grade(["#### boom"] * 2, ["a"] * 2)] == ["error", "error"]
        assert [r.status for r in g.grade(["#### boom"], ["a"])] == ["error"]
        assert calls().count("a|boom") == 2
    record.write_text("")
    with get_grader("math_verify", {"workers": 1, "cache_size": 1}, _work_fn=_record) as g:
        for answer in ("a", "b", "a", "a"):  # "b" pushes "a" out of a cache of one
            g.grade([f"#### {answer}"], ["a"])
        assert calls() == ["a|a", "a|a", "a|b"]


def _sleepy(reference, predicted):
    """Sleeps well past any test's timeout when the answer is "sleep"."""
    if predicted == "sleep":
        time.sleep(120)
    return reference == predicted


@pytest.mark.slow  # starts math-verify worker processes
def test_timeout_replaces_only_the_stuck_worker_and_loses_no_row():
    with get_grader("math_verify", {"workers": 2, "timeout_s": 0.5}, _work_fn=_sleepy) as g:
        g.warm()
        pids = {w.process.pid for w in g._pool._workers}
        rows = [f"#### {i}" for i in range(12)]
        rows[3] = "#### sleep"
        start = time.monotonic()
        results = g.grade(rows, ["0"] * 12)
        elapsed = time.monotonic() - start
        assert [r.status for r in results] == ["ok"] * 3 + ["timeout"] + ["ok"] * 8
        assert [r.is_correct for r in results] == [True] + [False] * 2 + [None] + [False] * 8
        assert elapsed < 0.5 + 5  # the timeout, not the two minutes the row would take
        assert len(pids & {w.process.pid for w in g._pool._workers}) == 1  # the other worker kept on
        # a timeout is not a verdict: the same pair is tried again (on the fresh worker, once it is warm)
        assert g.grade(["#### sleep"], ["0"])[0].status == "timeout"


def _crash(reference, predicted):
    if predicted == "crash":
        os._exit(1)
    return reference == predicted


@pytest.mark.slow  # starts math-verify worker processes
def test_a_worker_that_dies_gives_an_error_row():
    with get_grader("math_verify", {"workers": 1}, _work_fn=_crash) as g:
        results = g.grade(["#### 1", "#### crash", "#### 2", "#### 1"], ["1"] * 4)
    assert [(r.is_correct, r.status) for r in results] == [(True, "ok"), (None, "error"), (False, "ok"), (True, "ok")]


def _no_sympy():
    raise ImportError("no module named sympy")


@pytest.mark.slow  # starts math-verify worker processes
def test_a_worker_that_cannot_start_is_a_clear_error():
    pool = WorkerPool(_crash, _no_sympy, 2, 1.0, name="grader 'math_verify'", hint="check that math-verify imports")
    with pytest.raises(SgpoError, match="did not start \\(ImportError: no module named sympy\\); check that math-verify"):
        pool.start()
    assert pool._workers == []  # nothing left running


def test_workers_option():
    assert get_grader("math_verify")._pool.size == available_cpus()
    assert get_grader("math_verify", {"workers": 3})._pool.size == 3
    with pytest.raises(SgpoError, match="workers"):
        get_grader("math_verify", {"workers": 0})
