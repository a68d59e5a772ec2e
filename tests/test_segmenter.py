import re
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo_data.errors import SgpoError
from sgpo_data.segmenters import get_segmenter, strip_steps
from sgpo_data.segmenters.batch import SPACE

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
    with pytest.raises(SgpoError, match="invalid recipe key 'judge.segmenter.options.min_chars'"):
        get_segmenter("lines", {"min_chars": -1})
    with pytest.raises(SgpoError, match="judge.segmenter.options.max_chars"):
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


# The sentence ends as the first regex found them; it is quadratic on a long run of ".!?", so only short texts.
OLD_SENTENCE_END_RE = re.compile(r"[.!?]+[\"')\]]*\s+|\n\s*")
sentence_text = st.lists(st.one_of(st.sampled_from(list(".!?\"')]") + ["...", "?!", "3.5", " ", "\n", "\r\n", "\t",
                                                                       "\u2028", "\xa0", "x", "é"]),
                                   st.text(max_size=3)), max_size=30).map("".join)


@given(sentence_text)
def test_sentence_ends_are_the_first_regexs(text):
    assert get_segmenter("sentences").boundaries(text) == [m.end() for m in OLD_SENTENCE_END_RE.finditer(text)]


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


# <think> ... </think>: which part of a reasoning model's response the judge sees.

NAMES = ["paragraph", "lines", "numbered", "sentences"]
THINK_TEXT = "<think>a\n\nb</think>\n\nc\n\nd"


def test_think_modes_choose_the_judged_part():
    both = get_segmenter("paragraph").segment(THINK_TEXT)
    assert both == ("", ["<think>a\n\n", "b</think>\n\n", "c\n\n", "d"], "")  # the default: today's behaviour
    solution = get_segmenter("paragraph", {"think": "solution"}).segment(THINK_TEXT)
    assert solution == ("<think>a\n\nb</think>\n\n", ["c\n\n", "d"], "")
    thinking = get_segmenter("paragraph", {"think": "thinking"}).segment(THINK_TEXT)
    assert thinking == ("<think>", ["a\n\n", "b"], "</think>\n\nc\n\nd")
    assert get_segmenter("paragraph", {"think": "solution"}).split(THINK_TEXT) == ["c\n\n", "d"]
    # whitespace next to the tags stays with them; trailing whitespace of the response stays in the last step
    assert get_segmenter("lines", {"think": "thinking"}).segment("\n<think>\n x\ny \n</think>\nz\n") == (
        "\n<think>\n ", ["x\n", "y"], " \n</think>\nz\n")
    assert get_segmenter("lines", {"think": "solution"}).segment("<think>x</think> \n y\nz\n") == (
        "<think>x</think> \n ", ["y\n", "z\n"], "")


def test_think_modes_without_a_usable_block_judge_the_whole_response():
    solution, thinking = (get_segmenter("paragraph", {"think": m}) for m in ("solution", "thinking"))
    for text in ["a\n\nb", "", "  "]:  # no think block
        assert solution.segment(text) == thinking.segment(text) == ("", get_segmenter("paragraph").split(text), "")
    # unclosed <think> (cut off while thinking): no solution, so "solution" judges the whole response ...
    assert solution.segment("<think>a\n\nb") == ("", ["<think>a\n\n", "b"], "")
    # ... and "thinking" judges the thinking up to the end
    assert thinking.segment("<think>a\n\nb\n") == ("<think>", ["a\n\n", "b\n"], "")
    # the opening tag in the prompt (chat templates of R1, Qwen3): the thinking starts the response
    assert solution.segment("a\n\nb</think>c") == ("a\n\nb</think>", ["c"], "")
    assert thinking.segment("a\n\nb</think>c") == ("", ["a\n\n", "b"], "</think>c")
    # a blank solution or a blank thinking block: the whole response
    assert solution.segment("<think>a</think>\n\n") == ("", ["<think>a</think>\n\n"], "")
    assert thinking.segment("<think>\n\n</think>\n\nx") == ("", ["<think>\n\n", "</think>\n\n", "x"], "")
    # only the first block counts; only the exact lower-case tags are recognised
    assert solution.split("<think>a</think>b<think>c</think>d") == ["b<think>c</think>d"]
    assert thinking.split("<THINK>a</THINK>b") == ["<THINK>a</THINK>b"]


def test_min_chars_and_max_steps_apply_within_the_judged_part():
    text = "<think>long thought one\n\nlong thought two</think>\n\nok\n\nfirst step\n\nsecond\n\nthird\n\nfourth"
    assert get_segmenter("paragraph", {"think": "solution", "min_chars": 3, "max_steps": 3}).split(text) == [
        "ok\n\nfirst step\n\n", "second\n\n", "third\n\nfourth"]
    assert get_segmenter("paragraph", {"think": "thinking", "max_steps": 1}).split(text) == [
        "long thought one\n\nlong thought two"]


def test_unknown_think_mode_is_named():
    with pytest.raises(SgpoError, match=r"judge\.segmenter\.options\.think.*'both', 'solution' or 'thinking'"):
        get_segmenter("paragraph", {"think": "x"})


think_text = st.lists(
    st.one_of(st.sampled_from(["<think>", "</think>", "<think>\n", "\n</think>\n\n", "\n", " ", "\n\n", "x",
                               "Step 1: 2.", "3. a", "é"]), st.text()),
    max_size=30,
).map("".join)


@given(think_text, st.sampled_from(NAMES), st.sampled_from(["both", "solution", "thinking"]),
       st.integers(0, 12), st.one_of(st.none(), st.integers(1, 5)))
def test_prefix_steps_and_suffix_rebuild_the_response_exactly(text, name, think, min_chars, max_steps):
    seg = get_segmenter(name, {"think": think, "min_chars": min_chars, "max_steps": max_steps})
    prefix, steps, suffix = seg.segment(text)
    assert steps and prefix + "".join(steps) + suffix == text
    assert seg.split(text) == steps
    assert max_steps is None or len(steps) <= max_steps
    judged = "".join(steps)
    whole = prefix == suffix == ""
    close = text.find("</think>")
    if think == "both":
        assert whole
    elif think == "solution":
        if close >= 0 and text[close + 8:].strip():
            assert len(prefix) >= close + 8 and not suffix and judged == text[close + 8:].lstrip()
        else:
            assert whole
    else:
        opening = text.find("<think>", 0, close if close >= 0 else len(text))
        inside = text[0 if opening < 0 else opening + 7:close if close >= 0 else len(text)]
        if (opening >= 0 or close >= 0) and inside.strip():
            assert judged == (inside.strip() if close >= 0 else inside.lstrip())
            assert len(prefix) == (0 if opening < 0 else opening + 7) + len(inside) - len(inside.lstrip())
        else:
            assert whole


# split_many: a whole column at once, exactly the steps of split row by row.

HOSTILE_PIECES = ["\n", "\n\n", "\r\n", "\n \n", "\u2028", "\u2029", "\x0b", "\x0c", "\x00", "\t", " ", "\x85", "\xa0",
                  "\x1c", "\u3000", "\u2003", "😀", "é", "中", "x", "Step 1:", "3. a", ". ", "<think>", "</think>"]
HOSTILE = ["", " ", "\n", "\n\n", " \n \n ", "\t\n\x0c\n\t", "a\r\n\r\nb\r\n", "a\n\u2028\nb", "a\u2028\u2028b",
           "a\n\x0b\nb\x0c\n\x0c\nc", "a\n\x00\nb", "\x00\n\n\x00", "x\n \n \n y\n  \n", "😀\n\n😀\n\n",
           "é\n\u3000\nü\n\x85\nñ", "a\n\x1c\nb\n\x1f\n", "\n\n中\n \n文\n\n", "a\n\xa0\n\u2003b",
           "<think>a\n\nb</think>\n\nc"]
LONG = ["Step 1: a.\n\nStep 2: b.\n\n" * 5_000, "é" * 70_000 + "\n \n" + "😀" * 70_000 + "\n"]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text()), max_size=30).map("".join)
column = st.lists(st.one_of(st.none(), paragraph_text, think_text, hostile_text, st.sampled_from(HOSTILE)), max_size=8)
OPTIONS = [{"think": think, "min_chars": min_chars, "max_steps": max_steps}
           for think in ["both", "solution", "thinking"] for min_chars in [0, 4] for max_steps in [None, 1, 3]]


def row_by_row(seg, texts):
    return [seg.split(t) if t is not None else [] for t in texts]


def as_input(texts, form):
    """`texts` as split_many may get them: a list, an arrow array, a sliced one, a chunked one."""
    if form == "list":
        return texts
    if form == "sliced":
        return pa.array(["before\n\nx", *texts, None], pa.string())[1:-1]
    if form == "chunked":
        return pa.chunked_array([texts[:1], texts[1:]], pa.string())
    return pa.array(texts, pa.string())


@settings(deadline=None)  # pyarrow's first pa.array call imports its pandas shims (~0.5 s)
@given(column, st.sampled_from(NAMES), st.sampled_from(OPTIONS),
       st.sampled_from(["list", "array", "sliced", "chunked"]))
def test_split_many_gives_the_steps_of_split(texts, name, options, form):
    seg = get_segmenter(name, options)
    steps = seg.split_many(as_input(texts, form))
    assert steps.type == pa.list_(pa.string())
    assert steps.to_pylist() == row_by_row(seg, texts)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("options", OPTIONS)
def test_split_many_on_a_hostile_corpus(name, options):
    seg = get_segmenter(name, options)
    texts = [*HOSTILE, None, *LONG, *HOSTILE[::-1]]
    assert seg.split_many(texts).to_pylist() == row_by_row(seg, texts)
    assert seg.split_many(pa.array(texts)).to_pylist() == row_by_row(seg, texts)


def test_split_many_gives_a_missing_text_no_steps():
    seg = get_segmenter("paragraph")
    assert seg.split_many([None, "a\n\nb", None, ""]).to_pylist() == [[], ["a\n\n", "b"], [], [""]]
    assert seg.split_many(pa.array([None, None], pa.string())).to_pylist() == [[], []]
    assert seg.split_many([]).to_pylist() == []
    assert seg.split_many(pa.chunked_array([], pa.string())).to_pylist() == []
    # a null slot may hold bytes (arrow allows it): they are no text
    offsets, data = np.array([0, 4, 8, 12], np.int32), b"a\n\nbx\n\nyc\n\nd"
    texts = pa.StringArray.from_buffers(3, pa.py_buffer(offsets), pa.py_buffer(data), pa.py_buffer(bytes([0b101])))
    assert seg.split_many(texts).to_pylist() == [["a\n\n", "b"], [], ["c\n\n", "d"]]


def test_the_batch_whitespace_is_python_whitespace():
    assert SPACE == "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
