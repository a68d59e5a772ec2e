import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgpo_data.errors import SgpoError
from sgpo_data.segmenters import get_segmenter, strip_steps

SEPARATOR = re.compile(r"\n[ \t]*\n")


@pytest.fixture(scope="module")
def split():
    return get_segmenter("paragraph").split


def test_three_paragraphs(split):
    text = "First, 2 + 2 = 4.\n\nThen 4 * 3 = 12.\n  \t\nSo the answer is 12.\n"
    steps = split(text)
    assert steps == ["First, 2 + 2 = 4.\n\n", "Then 4 * 3 = 12.\n  \t\n", "So the answer is 12.\n"]
    assert strip_steps(steps) == ["First, 2 + 2 = 4.", "Then 4 * 3 = 12.", "So the answer is 12."]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", [""]),
        ("  \n\n\t", ["  \n\n\t"]),  # no content: one step
        ("one line", ["one line"]),
        ("line 1\nline 2", ["line 1\nline 2"]),  # a single line break is not a separator
        ("\n\n  a\n\n\n\nb\n\n", ["\n\n  a\n\n\n\n", "b\n\n"]),  # leading/trailing blanks, a run of blanks
        ("a\r\n\r\nb\r\n", ["a\r\n\r\n", "b\r\n"]),  # Windows line ends
    ],
)
def test_edge_cases(split, text, expected):
    assert split(text) == expected


def test_unknown_segmenter_lists_valid_names_and_a_bad_option_is_named():
    with pytest.raises(SgpoError, match="paragraph, sentences"):
        get_segmenter("chapters")
    with pytest.raises(SgpoError, match="invalid recipe key 'judge.segmenter_options.min_chars'"):
        get_segmenter("lines", {"min_chars": -1})
    with pytest.raises(SgpoError, match="judge.segmenter_options.max_chars"):
        get_segmenter("lines", {"max_chars": 3})


def test_lines_numbered_and_sentences():
    text = "Let x be the cost.\nStep 1: 3 + 4 = 7.\n\n2) Then 7 * 2 = 14. So x = 14!\nThe answer is 14.\n"
    assert get_segmenter("lines").split(text) == [
        "Let x be the cost.\n", "Step 1: 3 + 4 = 7.\n\n", "2) Then 7 * 2 = 14. So x = 14!\n", "The answer is 14.\n"]
    assert get_segmenter("numbered").split(text) == [
        "Let x be the cost.\n", "Step 1: 3 + 4 = 7.\n\n", "2) Then 7 * 2 = 14. So x = 14!\nThe answer is 14.\n"]
    assert get_segmenter("sentences").split("It costs 3.5 dollars. Twice is 7! Done") == [
        "It costs 3.5 dollars. ", "Twice is 7! ", "Done"]
    assert get_segmenter("numbered").split("**Step 1**: a\n**Step 2**: b") == ["**Step 1**: a\n", "**Step 2**: b"]
    assert get_segmenter("numbered").split("The sum is 12.5 and 3. is odd") == ["The sum is 12.5 and 3. is odd"]


def test_short_steps_merge_into_the_one_before_and_the_cap_merges_the_tail():
    text = "ok\nFirst real step here.\n=\nSecond real step.\nThird one.\nFourth one.\n"
    assert get_segmenter("lines", {"min_chars": 5}).split(text) == [
        "ok\nFirst real step here.\n=\n", "Second real step.\n", "Third one.\n", "Fourth one.\n"]
    assert get_segmenter("lines", {"max_steps": 2}).split(text) == ["ok\n", text[3:]]


paragraph_text = st.lists(
    st.one_of(st.sampled_from(["\n", "\r", "\t", " ", "\n\n", "\n \n", "\r\n", "x", "2 + 2", "é"]), st.text()),
    max_size=30,
).map("".join)


@given(paragraph_text, st.sampled_from(["paragraph", "lines", "numbered", "sentences"]),
       st.integers(0, 12), st.one_of(st.none(), st.integers(1, 5)))
def test_every_segmenter_rebuilds_the_response_exactly(text, name, min_chars, max_steps):
    steps = get_segmenter(name, {"min_chars": min_chars, "max_steps": max_steps}).split(text + "\nStep 2: 1.")
    assert steps and "".join(steps) == text + "\nStep 2: 1."
    assert max_steps is None or len(steps) <= max_steps


@given(paragraph_text)
def test_split_is_lossless_and_cuts_at_every_blank_line(text):
    steps = get_segmenter("paragraph").split(text)
    assert steps and "".join(steps) == text
    for step in steps:
        assert not SEPARATOR.search(step.strip())  # separators only at a step's edges
    assert all(s.strip() for s in steps) or len(steps) == 1  # no empty step unless there is no content
