import re

import pytest

from sgpo_data.data import generate_arithmetic
from sgpo_data.errors import SgpoError

EQUATION = re.compile(r"(\d+(?:\s*[-+×÷]\s*\d+)+)\s*=\s*(\d+)")


def _steps(row):
    *steps, final = row["reference_solution"].split("\n\n")
    return steps, final


def test_same_seed_same_problems_and_ids():
    a = generate_arithmetic(20, 1, 5, seed=7)
    assert a == generate_arithmetic(20, 1, 5, seed=7)
    assert [r["prompt_id"] for r in a] == [f"arith-7-{i:05d}" for i in range(20)]
    assert len({r["problem"] for r in a}) > 15


def test_different_seeds_differ():
    assert [r["problem"] for r in generate_arithmetic(10, 2, 4, 0)] != [r["problem"] for r in generate_arithmetic(10, 2, 4, 1)]


def test_rows_have_prompt_schema_keys():
    for row in generate_arithmetic(5, 1, 3, 0):
        assert set(row) == {"prompt_id", "problem", "reference_solution", "reference_answer", "data_source"}
        assert row["data_source"] == "arithmetic"
        assert row["problem"].endswith("?")


@pytest.mark.parametrize("lo,hi", [(1, 1), (2, 4), (3, 6)])
def test_step_counts_within_bounds(lo, hi):
    counts = {len(_steps(r)[0]) for r in generate_arithmetic(200, lo, hi, seed=lo)}
    assert counts <= set(range(lo, hi + 1))
    assert counts == set(range(lo, hi + 1))  # 200 draws cover every count


def test_solutions_recompute_to_the_answer():
    for row in generate_arithmetic(500, 1, 6, seed=3):
        steps, final = _steps(row)
        prev = None
        for paragraph in steps:
            eqs = EQUATION.findall(paragraph)
            assert len(eqs) == 1, paragraph
            left, right = eqs[0]
            value = eval(left.replace("×", "*").replace("÷", "/"))
            assert value == int(right) and float(value).is_integer(), paragraph
            if prev is not None:  # each step continues from the previous result
                assert int(re.match(r"\d+", left).group()) == prev, paragraph
            assert 0 < int(right) < 1000
            prev = int(right)
        assert final == f"The answer is {prev}."
        assert row["reference_answer"] == str(prev)


def test_answers_are_non_negative_integers():
    for row in generate_arithmetic(300, 1, 8, seed=11):
        assert row["reference_answer"].isdigit()


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(num_problems=0, min_steps=1, max_steps=2), "num_problems"),
        (dict(num_problems=3, min_steps=0, max_steps=2), "min_steps"),
        (dict(num_problems=3, min_steps=4, max_steps=2), "min_steps <= max_steps"),
    ],
)
def test_bad_arguments(kwargs, needle):
    with pytest.raises(SgpoError, match=needle):
        generate_arithmetic(seed=0, **kwargs)
