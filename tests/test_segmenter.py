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


def test_unknown_segmenter_lists_valid_names():
    with pytest.raises(SgpoError, match="paragraph"):
        get_segmenter("sentences")


paragraph_text = st.lists(
    st.one_of(st.sampled_from(["\n", "\r", "\t", " ", "\n\n", "\n \n", "\r\n", "x", "2 + 2", "é"]), st.text()),
    max_size=30,
).map("".join)


@given(paragraph_text)
def test_split_is_lossless_and_cuts_at_every_blank_line(text):
    steps = get_segmenter("paragraph").split(text)
    assert steps and "".join(steps) == text
    for step in steps:
        assert not SEPARATOR.search(step.strip())  # separators only at a step's edges
    assert all(s.strip() for s in steps) or len(steps) == 1  # no empty step unless there is no content
