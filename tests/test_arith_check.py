"""The arithmetic check (the coming `arith` judge): exact evaluation of the equations written in steps."""

from __future__ import annotations

import re

import pytest

from sgpo_data.data import generate_arithmetic
from sgpo_data.judges.arith import false_equations, first_false_step
from sgpo_data.segmenters import get_segmenter


@pytest.mark.parametrize("step", [
    "12 * 3 = 36", "$1,200 + $300 = $1,500.", "20% of 50 = 10", "5 apples + 3 apples = 8 apples", "2 dozen = 24",
    "1/3 = 0.33", "5 × 7 = 35 stickers", "x = 5", "3 + 4 = 7 * 2 = 14", "2 * 3 + 1 = 6 + 1 = 7", "12 ÷ 4 = 3",
    "(3 + 4) * 2 = 14", "0.1 + 0.2 = 0.3", "\\( 3 \\times 4 = 12 \\)", "So, 3 * 4 = 12, and 12 + 1 = 13", "The answer is 42.",
    # algebra, not arithmetic: the numbers are not the terms (ProcessBench's correct solutions hold such lines)
    "x^2 - 3 = 8", "2x + 3 = 7", "a_3 + 2 = 9", "\\frac{1}{2} + 3 = 4", "$3^2 + 4^2 = 5^2$", "f(2) + 1 = 5", "f(2 + 1) = 4",
])
def test_true_equations_and_statements_pass(step):
    assert false_equations(step) == []


@pytest.mark.parametrize("step, wrong", [
    ("12 * 3 = 35", ["12 * 3 = 35"]),
    ("He has 19 + 35 = 54 stickers. Then 54 - 5 = 48.", ["54 - 5 = 48"]),
    ("3 + 4 = 7 * 2 = 15", ["7 * 2 = 15"]),
    ("7 / 2 = 3", ["7 / 2 = 3"]),
    ("3 + 4 = 7\n2 + 1 = 4", ["2 + 1 = 4"]),
    ("1/3 = 0.34", ["1/3 = 0.34"]),
    ("25% of 80 = 25", ["25/100*80 = 25"]),
    ("The 3rd box: 3 + 4 = 8", ["3 + 4 = 8"]),
    ("x = 2 + 3 = 6", ["2 + 3 = 6"]),
])
def test_false_equations_are_found(step, wrong):
    assert false_equations(step) == wrong


def test_on_the_embedded_data_every_slip_is_found_and_no_correct_step_is_flagged():
    """The generator knows every intermediate value: its solutions hold, and changing any one result makes
    exactly that step the first error."""
    split = get_segmenter("paragraph").split
    slips = 0
    for problem in generate_arithmetic(40, 2, 4, 0):
        steps = split(problem["reference_solution"])
        assert first_false_step(steps) == -1
        for k, step in enumerate(steps):
            match = re.search(r"= (\d+)", step)
            if match is None:
                continue
            slipped = step[: match.start(1)] + str(int(match.group(1)) + 1) + step[match.end(1):]
            assert first_false_step(steps[:k] + [slipped] + steps[k + 1:]) == k
            slips += 1
    assert slips > 100


def test_a_side_too_big_to_be_a_calculation_is_not_checked():
    """Up to 100 operators and 100 digits a number a side is checked; past that it is a runaway (a repetition
    loop), skipped like any side that is not plain arithmetic."""
    sum_of_101, sum_of_102 = " + ".join(["1"] * 101), " + ".join(["1"] * 102)
    assert false_equations(f"{sum_of_101} = 7") == [f"{sum_of_101} = 7"]
    assert false_equations(f"{sum_of_102} = 7") == []
    assert false_equations("1/4 = 0." + "3" * 100) == ["1/4 = 0." + "3" * 100]
    assert false_equations("1/4 = 0." + "3" * 101) == []
    assert false_equations("2 * " + "1" * 100 + " = 5") != []
    assert false_equations("2 * " + "1" * 101 + " = 5") == []
