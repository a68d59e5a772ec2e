import pytest

from sgpo_data.graders.extract import extract_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        # \boxed / \fbox, balanced and nested braces, the last box wins
        ("so the result is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\sqrt{\\frac{a^{2}}{b}}} done", "\\sqrt{\\frac{a^{2}}{b}}"),
        ("first \\boxed{1}, corrected: \\boxed{2}", "2"),
        ("\\fbox{7}", "7"),
        ("$\\boxed{x = 3}$", "x = 3"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\boxed{5}}", "\\boxed{5}"),
        ("\\boxed{3} and then a truncated \\boxed{4", "3"),
        ("\\boxed 5", "5"),
        # #### (rest of the line), the last one wins
        ("Natalia sold 48 clips.\n#### 72", "72"),
        ("#### 1\nwait\n#### 2\n", "2"),
        ("#### $1,234$", "1234"),
        # answer phrases, any case, up to the end of the sentence
        ("The answer is 27.", "27"),
        ("the answer is 3.5. Next sentence 9.", "3.5"),
        ("So the final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("FINAL ANSWER IS 12 apples", "12 apples"),
        ("Answer: 18", "18"),
        ("**Final Answer:** 6", "6"),
        ("Final answer:\n\n-4", "-4"),
        ("The answer is 1. Actually, the answer is 2.", "2"),
        # last number fallback
        ("I think it is 12 or maybe 13", "13"),
        ("total: 1,234 dollars", "1234"),
        ("it drops to -7 degrees", "-7"),
        ("about 3.75 m", "3.75"),
        ("5-3 gives two", "3"),
        ("roughly 1,234,567.5 units", "1234567.5"),
    ],
)
def test_rules(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 5.\n#### 6\n\\boxed{7}", "7"),  # box beats #### beats phrase
        ("\\boxed{7}\n#### 6\nThe answer is 5.", "7"),  # regardless of order in the text
        ("#### 6\nThe answer is 5.\n8", "6"),  # #### beats phrase and numbers
        ("The answer is 5, not 8 or 9", "5, not 8 or 9"),  # phrase beats the last number
    ],
)
def test_priority(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "no digits here", "The answer is .", "\\boxed{"])
def test_nothing_found(text):
    assert extract_answer(text) is None


def test_fallback_off():
    assert extract_answer("I think it is 12", last_number_fallback=False) is None
    assert extract_answer("The answer is 12", last_number_fallback=False) == "12"
    assert extract_answer("\\boxed{12} and 13", last_number_fallback=False) == "12"
