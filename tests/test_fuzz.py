"""Every parser of user-controlled text, fed hostile input: a corpus of known-bad cases and hypothesis.

The rule (docs/ARCHITECTURE.md): bad input is one `SgpoError` line naming the file, line/row or key and the fix;
a bad row becomes a row status with its raw text kept; no other exception escapes, nothing is silently dropped.
Parsers that read untrusted text (responses, judge replies) must also stay fast on pathological input: each
adversarial case below runs twice, for its result in the fast tier (nothing timed) and for its speed in the slow
tier, where it has a deadline far under what a quadratic regex or loop would need.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgpo_data.backends.base import Completion, Generation
from sgpo_data.config import DataConfig, Recipe, load_recipe
from sgpo_data.data import load_prompts
from sgpo_data.errors import SgpoError
from sgpo_data.graders.extract import extract_answer
from sgpo_data.judges.base import JudgeInput
from sgpo_data.judges.labels import LabelsJudge
from sgpo_data.judges.llm_judge import LLMJudge, LLMJudgeOptions, neutralise
from sgpo_data.judges.parse import parse_first_error, parse_group
from sgpo_data.pipeline.folder import StageFolder
from sgpo_data.pipeline.runner import ShardSpec
from sgpo_data.run_reader import StageFiles, read_stage
from sgpo_data.schema import JudgeStatus
from sgpo_data.segmenters import get_segmenter

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- the hostile corpus ------------------------------------------------------------------------------------

WHITESPACE = [chr(c) for c in range(0x110000) if chr(c).isspace()]  # what str.strip and the regex \s agree on
LINE_BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
INVISIBLE = ["\x00", "\x01", "\x7f", "\u200b", "\u200d", "\ufeff", "\u00ad", "\u180e", "\u202e", "\u2066"]
SURROGATES = ["\ud800", "\udfff", "\udbff\udc00"[0]]  # lone halves: a str may hold them, UTF-8 cannot
SCRIPTS = ["שלום עולם", "مرحبا", "\u202eabc", "👨\u200d👩\u200d👧", "🇫🇷", "e\u0301", "Ω≈ç√∫", "١٢٣", "𝟐", "²"]
MARKUP = ["\\boxed{", "\\boxed ", "\\fbox{", "{", "}", "\\", "\\{", "$", "**", "\\(", "\\)", "####", "#",
          "The answer is", "Final Answer:", "answer:", "<think>", "</think>", "<step_1>", "< / step", "Step 1:",
          "1.", "2)", "**Step 3**", ".", "!", "?", "...", "\"", ")", "1,234", "-", "3.5", "0", "-1", "\n\n"]
TOKENS = WHITESPACE + LINE_BREAKS + INVISIBLE + SCRIPTS + MARKUP + ["x", "ab", "42", "é"]

hostile_text = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=40).map("".join)
hostile_text_with_surrogates = st.lists(
    st.one_of(st.sampled_from(TOKENS + SURROGATES), st.text(max_size=4)), max_size=40).map("".join)

# Long pathological inputs (100-200 KB): each must be handled well under a second.
N = 100_000
LONG_TEXTS = {
    "unclosed boxes": "\\boxed{" * 20_000,
    "unclosed boxes then one closed": "\\boxed{" * 20_000 + "\\boxed{7}",
    "nested braces": "\\boxed{" + "{" * N + "}" * N + "}",
    "box tokens": "\\boxed 5 " * 20_000,
    "backslashes": "\\" * 2 * N,
    "digits": "1" * 2 * N,
    "digit commas": "1," * N,
    "thousands groups": "1" + ",000" * 50_000 + "1",
    "minus signs": "-" * N + "1",
    "decimal points": "1." * N,
    "hash lines": "####\n" * 40_000,
    "hash run": "#" * 2 * N,
    "answer then spaces": "answer" + " " * N + "x",
    "the answer then spaces": "the answer" + " " * N + "x",
    "answer labels on one line": "answer: " * 20_000,
    "empty answers": "answer: . " * 20_000,
    "wrapped in parentheses": "\\boxed{" + "\\(" * 50_000 + "}",
    "wrapped in stars": "\\boxed{" + "*" * N + "}",
    "dollars and periods": "\\boxed{" + "$." * 50_000 + "}",
    "bold labels": "Final Answer **" * 10_000,
    "spaces": " " * 2 * N,
    "newlines": "\n" * 2 * N,
    "one long line": "x" * 2 * N,
    "tag opener then spaces": "<" + " " * N + "x",
    "unicode whitespace": "".join(WHITESPACE) * 3_000,
    "think tags": "<think>" * 10_000 + "</think>" * 10_000,
    "numbered lines": "".join(f"{i}. a\n" for i in range(20_000)),
    "sentences": "a. " * 30_000,
    "blank line runs": "a\n \n\t\n" * 20_000,
    "nested tags": "<a " * N + ">" * N,
    "unclosed step tags": "< step_1 " * 20_000,
    "headings after carriage returns": "\r #" * 50_000,
}


class Timeout(Exception):
    pass


@contextmanager
def deadline(seconds: float):
    """Raise Timeout after `seconds` (SIGALRM: the regex engine checks for signals, so a runaway match stops)."""
    def expire(*_):
        raise Timeout(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# Each adversarial case: its result in the fast tier; its result and its wall-clock time in the slow tier.
TIMED = pytest.mark.parametrize("timed", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["result", "speed"])


@contextmanager
def runs_within(seconds: float, timed: bool, alarm_s: float | None = None):
    """timed: the body must take under `seconds` (and SIGALRM stops it after `alarm_s`, default `seconds`, so a
    runaway fails instead of running for minutes). Not timed (the fast tier): no clock, no alarm."""
    if not timed:
        yield
        return
    start = time.perf_counter()
    with deadline(alarm_s or seconds):
        yield
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s, more than {seconds} s"


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message


# --- answer extraction -----------------------------------------------------------------------------------


def _check_answer(answer, text):
    assert answer is None or (isinstance(answer, str) and answer and answer == answer.strip()), (answer, text[:80])


@FUZZ
@given(hostile_text_with_surrogates, st.booleans())
def test_extract_answer_never_raises_and_returns_a_stripped_answer_or_none(text, fallback):
    _check_answer(extract_answer(text, fallback), text)


@TIMED
@pytest.mark.parametrize("name", sorted(LONG_TEXTS))
def test_extract_answer_is_fast_on_pathological_input(name, timed):
    text = LONG_TEXTS[name]
    with runs_within(1.0, timed, alarm_s=5):  # a quadratic regex or loop takes minutes here; the alarm stops it
        answer = extract_answer(text)
    _check_answer(answer, text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{" * 20_000 + "\\boxed{7}", "7"),  # unbalanced boxes before a closed one: the closed one
        ("\\boxed{" * 5 + "\\boxed{1} \\boxed{2", "1"),
        ("\\boxed 5 " * 3 + "\\boxed 6", "6"),
        ("answer:" + " " * 10_000 + "42", "42"),
        ("the answer is " + "." * 5 + " answer: 9.", "9"),
        ("\\boxed{" + "\\(" * 1_000 + "8" + "\\)" * 1_000 + "}", "8"),
        ("\\boxed{ $ **\\(12\\)** $ }", "12"),
        ("#### " + "1," * 3 + "000", "1,1,1,000"),  # not a thousands number: kept
    ],
)
def test_extract_answer_on_hostile_but_answerable_text(text, expected):
    assert extract_answer(text) == expected


# --- judge replies -----------------------------------------------------------------------------------------

reply = st.one_of(st.none(), hostile_text_with_surrogates,
                  st.integers(-3, 12).map(str), st.from_regex(r"\s*-?\d{1,30}\s*\.?\s*", fullmatch=True))


def _check_verdict(verdict, raw, num_steps):
    assert verdict.raw is raw  # kept for audit, as given
    assert verdict.status in (JudgeStatus.OK, JudgeStatus.PARSE_ERROR)
    if verdict.status == JudgeStatus.OK:
        assert isinstance(verdict.first_error_step, int) and -1 <= verdict.first_error_step < num_steps
    else:
        assert verdict.first_error_step is None


@FUZZ
@given(reply, st.integers(0, 40))
def test_parse_first_error_never_raises(raw, num_steps):
    _check_verdict(parse_first_error(raw, num_steps), raw, num_steps)


@FUZZ
@given(st.integers(1, 30).flatmap(lambda k: st.tuples(st.just(k), st.integers(-1, k - 1))))
def test_parse_first_error_reads_every_index_in_range(case):
    num_steps, index = case
    for raw in (str(index), f" {index}.\n", f"0000{index}" if index >= 0 else str(index)):
        verdict = parse_first_error(raw, num_steps)
        assert (verdict.status, verdict.first_error_step) == (JudgeStatus.OK, index), raw


@pytest.mark.parametrize("raw", ["1" * 5_000, "-" + "9" * 5_000, "0" * 5_000 + "1" * 40, "1" * 19, "2 3", "1e0",
                                 "0x1", "+1", "\u22121", "²", "one", "", "\x00", "\ud800", "1\n2", "-2", "5"])
def test_parse_first_error_on_hostile_replies(raw):
    verdict = parse_first_error(raw, 5)
    assert verdict.status == JudgeStatus.PARSE_ERROR and verdict.raw is raw


group_reply = st.one_of(
    reply,
    st.lists(st.tuples(st.integers(-2, 6), st.one_of(st.integers(-3, 8).map(str), st.sampled_from(["9" * 5000, "x"]))),
             max_size=6).map(lambda lines: "\n".join(f"response_{j}: {n}" for j, n in lines)),
)


@FUZZ
@given(group_reply, st.lists(st.integers(0, 6), max_size=6))
def test_parse_group_never_raises(raw, num_steps):
    verdicts = parse_group(raw, num_steps)
    assert len(verdicts) == len(num_steps)
    assert len({v.status for v in verdicts}) <= 1  # all ok, or all parse errors
    for verdict, k in zip(verdicts, num_steps):
        _check_verdict(verdict, raw, k)


@FUZZ
@given(st.lists(st.integers(1, 6).flatmap(lambda k: st.tuples(st.just(k), st.integers(-1, k - 1))), min_size=1,
                max_size=6), st.sampled_from(["\n", "\r\n", "\n\n", "\u2028"]))
def test_parse_group_reads_every_well_formed_reply(cases, newline):
    raw = newline.join(f"response_{j}: {index}" for j, (_, index) in enumerate(cases))
    verdicts = parse_group(raw, [k for k, _ in cases])
    assert [(v.status, v.first_error_step) for v in verdicts] == [(JudgeStatus.OK, i) for _, i in cases]


@pytest.mark.parametrize("raw", ["response_0: " + "1" * 5_000, "response_" + "0" * 5_000 + "1: 1",
                                 "response_" + "1" * 5_000 + ": 1", "response_0: 1\nresponse_0: 1"])
def test_parse_group_on_hostile_replies(raw):
    verdicts = parse_group(raw, [3, 3][:raw.count("\n") + 1])
    assert all(v.status == JudgeStatus.PARSE_ERROR and v.raw is raw for v in verdicts)
    leading_zeros = parse_group("response_" + "0" * 5_000 + ": " + "0" * 5_000 + "2", [3])
    assert [(v.status, v.first_error_step) for v in leading_zeros] == [(JudgeStatus.OK, 2)]


ITEM = JudgeInput("What is 1 + 1?", "1 + 1 = 2", ["1 + 1 = 2.", "So 2."])


@FUZZ
@given(st.one_of(st.just(None), hostile_text))
def test_llm_judge_replies_become_verdicts(text):
    judge = LLMJudge(lambda: None, LLMJudgeOptions(constrained=False))
    result = Generation([] if text is None else [Completion(text, "stop", 1, None)], 10)
    verdict = judge.verdict(ITEM, result)
    _check_verdict(verdict, text, len(ITEM.steps))

    group = LLMJudge(lambda: None, LLMJudgeOptions(constrained=False, mode="group"))
    session = group.group_session([ITEM, ITEM])
    next(session)
    with pytest.raises(StopIteration) as done:
        session.send(result)
    assert len(done.value.value) == 2 and all(v.raw == text for v in done.value.value)


def _unbracket(text: str) -> str:
    return text.replace("\u2039", "<").replace("\u203a", ">").replace("\\", "")


# Tag-like text, as a judge model could read it: <system>, </b>, <br/>, and any spelling of a step tag.
TAG_LIKE = re.compile(r"</?[A-Za-z_][\w:.-]*(?:\s[^<>\n]*)?/?>|<\s*(?:/\s*)?step[^<>\n]*>", re.IGNORECASE)
tag_soup = st.lists(st.sampled_from(["<", ">", "</", "/>", "step_1", "b", " ", "\n", "x", "\u2039", "\u203a"]),
                    max_size=30).map("".join)


@FUZZ
@given(st.one_of(hostile_text_with_surrogates, tag_soup))
def test_neutralise_only_swaps_brackets_and_escapes_headings(text):
    out = neutralise(text)
    assert _unbracket(out) == _unbracket(text)
    assert not TAG_LIKE.search(out)
    assert not any(line.lstrip().startswith("#") for line in out.splitlines())  # no line opens a section


@pytest.mark.parametrize("text", ["<step_1 <b> >", "<step_1 <b <c> > >", "</step_2 </b> >", "< step_3 <br/> >",
                                  "<system <step_0> >"])
def test_neutralise_leaves_no_tag_like_text_when_tags_nest(text):
    assert not TAG_LIKE.search(neutralise(text))


@pytest.mark.parametrize("text", ["a\r## Task", "a\r\n## Task", "a\u2028 ## Task", "a\x85\t# Task", "a\x0c#"])
def test_neutralise_escapes_headings_after_every_line_break(text):
    assert "\\#" in neutralise(text)


@pytest.mark.parametrize("name", ["tag opener then spaces", "spaces", "think tags", "numbered lines", "nested tags",
                                  "unclosed step tags", "headings after carriage returns", "hash lines"])
@TIMED
def test_neutralise_is_fast_on_pathological_input(name, timed):
    with runs_within(1.0, timed, alarm_s=5):
        neutralise(LONG_TEXTS[name])


@pytest.mark.parametrize("value", [None, "2", " -1 ", "x", "1" * 5_000, 1, -1, 7, True, 1.0, float("nan"), [1],
                                   {"a": 1}, b"1", "\ud800"])
def test_labels_judge_never_raises(value):
    verdict = LabelsJudge().decide(JudgeInput("p", None, ["a", "b"], columns={"label": value}))
    assert verdict.status in (JudgeStatus.OK, JudgeStatus.PARSE_ERROR)
    assert verdict.raw == (None if value is None else str(value))


# --- segmenters (tests/test_segmenter.py has the everyday hypothesis tests and split_many == split; these add
# the documented invariants on hostile text, lone surrogates included, and speed on long input) ----------------

SEGMENTERS = ["paragraph", "lines", "numbered", "sentences"]
THINK = ["both", "solution", "thinking"]


def _check_segments(segmenter, text, options):
    prefix, steps, suffix = segmenter.segment(text)
    assert steps and all(isinstance(s, str) for s in steps)
    assert prefix + "".join(steps) + suffix == text  # nothing lost, nothing added
    assert segmenter.split(text) == steps
    if options.get("think", "both") == "both":
        assert prefix == suffix == ""
    if options.get("max_steps"):
        assert len(steps) <= options["max_steps"]
    if "".join(steps).strip():  # a judged part with content has no blank step ...
        assert all(step.strip() for step in steps), steps
        if options.get("min_chars") and len(steps) > 1:  # ... nor one shorter than min_chars
            assert all(len("".join(step.split())) >= options["min_chars"] for step in steps), steps
    else:  # ... and one without content is one step
        assert len(steps) == 1
    return steps


segmenter_options = st.fixed_dictionaries({
    "min_chars": st.sampled_from([0, 0, 1, 4]),
    "max_steps": st.sampled_from([None, None, 1, 2, 5]),
    "think": st.sampled_from(THINK),
})


@FUZZ
@given(hostile_text_with_surrogates, st.sampled_from(SEGMENTERS), segmenter_options)
def test_segmenters_keep_their_invariants_on_hostile_text(text, name, options):
    _check_segments(get_segmenter(name, options), text, options)


def _arrow_safe(text: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in text)


CORPUS = {
    "empty": "",
    "only whitespace": "".join(WHITESPACE),
    "each whitespace as a separator": "".join(f"a{w}{w}b{w}\n{w}\nc. " for w in WHITESPACE),
    "line breaks of every kind": "".join(f"step {i}{br}{br}" for i, br in enumerate(LINE_BREAKS)),
    "windows line ends": "a\r\n\r\nb\r\n\r\n\r\nc\r\n",
    "old mac line ends": "a\r\rb\rc",
    "nul and controls": "a\x00\n\n\x00b\x01\x7f\n\x0b\nc",
    "lone surrogates": "\ud800\n\n\udfff. x\n\ud800",
    "emoji and zwj": "👨\u200d👩\u200d👧 1.\n\n🇫🇷! e\u0301?\n2) ok",
    "right to left": "שלום.\n\nمرحبا!\n\u202eStep 1: abc\n\u2066x\u2069",
    "bom and zero width": "\ufeff\u200bStep 1:\u200b\n\n\u200b\n\nStep 2:",
    "markers only": "1.\n2.\n3)\nStep 4:\n**Step 5**\n#",
    "unclosed think": "<think>a\n\nb",
    "think tags only": "<think></think>",
    "nested think": "<think><think>a</think>\n\nb</think>c",
    "whitespace around tags": "\u2028<think>\u3000\n a \u2029</think>\x85\n b",
}


@pytest.mark.parametrize("name", SEGMENTERS)
@pytest.mark.parametrize("case", sorted(CORPUS))
def test_segmenters_on_the_hostile_corpus(name, case):
    text = CORPUS[case]
    for options in ({}, {"min_chars": 3}, {"max_steps": 2}, {"think": "solution"}, {"think": "thinking"}):
        _check_segments(get_segmenter(name, options), text, options)


FAST_SEGMENTER_CASES = [(name, case) for name in SEGMENTERS for case in sorted(LONG_TEXTS)]


@TIMED
@pytest.mark.parametrize("name, case", FAST_SEGMENTER_CASES)
def test_segmenters_are_fast_on_long_input(name, case, timed):
    text = LONG_TEXTS[case]
    with runs_within(1.0, timed, alarm_s=5):
        steps = get_segmenter(name, {"min_chars": 2}).split(text)
    with runs_within(5.0, timed):  # the batched path over Arrow
        if _arrow_safe(text):
            get_segmenter(name).split_many([text])
    assert "".join(steps) == text


@pytest.mark.parametrize("text, steps", [("." * N, ["." * N]), ("!" * N + "x", ["!" * N + "x"]),
                                         ("?." * (N // 2), ["?." * (N // 2)]),
                                         ("a" + "." * N + " b", ["a" + "." * N + " ", "b"])])
@TIMED
def test_sentences_segmenter_is_fast_on_a_long_run_of_periods(text, steps, timed):
    with runs_within(0.5, timed):  # a linear pass takes milliseconds
        assert get_segmenter("sentences").split(text) == steps


# --- the recipe loader -------------------------------------------------------------------------------------

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))

BAD_RECIPES = {
    "binary": (bytes(range(256)) * 4, "is not UTF-8 text"),
    "latin1": ("data:\n  source: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    "utf16": ("data:\n  source: x\n".encode("utf-16"), "is not UTF-8 text"),
    "nul": (b"data:\n  source: a\x00b\n", "is not valid YAML"),
    "tabs": (b"data:\n\tsource: x\n", "is not valid YAML: found character '\\t' that cannot start any token at line 2"),
    "unclosed": (b"data: [unclosed\n", "is not valid YAML"),
    "list at top": (b"- data\n- generate\n", "must be a mapping"),
    "scalar at top": (b"42\n", "must be a mapping"),
    "billion laughs in a section": ((LAUGHS + "data: *i\n").encode(), "expands to more than"),
    "billion laughs in a free dict": ((LAUGHS + "generate:\n  backend_options: {x: *i}\n").encode(), "expands to more than"),
    "deep list": (("x: " + "[" * 1_500 + "]" * 1_500 + "\n").encode(), "nested too deeply"),
    "deep map": (("x: " + "{a: " * 3_000 + "1" + "}" * 3_000 + "\n").encode(), "nested too deeply"),
    "nested past the limit": (("judge:\n  options: " + "[" * 80 + "]" * 80 + "\n").encode(), "nested more than 64"),
    "huge integer": (("generate:\n  sampling:\n    num_samples: " + "9" * 5_000 + "\n").encode(), "not valid YAML"),
    "python tag": (b"x: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
    "bad timestamp": (b"data:\n  source: !!timestamp 2001-99-99\n", "not valid YAML"),
    "unhashable key": (b"? [1, 2]\n: 3\n", "found unhashable key"),
    "unicode key": ("datä:\n  x: 1\n".encode(), "invalid recipe key 'datä'"),
    "newline in a key": (b'"da\\nta": 1\n', "invalid recipe key 'da\\nta'"),
    "integer key": (b"1: 2\n", "invalid recipe key '1'"),
    "null section": (b"data:\n", "invalid recipe key 'data'"),
    "huge float": (b"score:\n  beta: 1e400\n  gamma: .nan\n", "invalid recipe key 'score.gamma'"),
    "huge string value": (("generate:\n  sampling:\n    num_samples: " + "x" * 100_000 + "\n").encode(),
                          "invalid recipe key 'generate.sampling.num_samples'"),
}


@TIMED
@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_hostile_recipe_files_are_one_line_errors_naming_the_file(tmp_path, case, timed):
    content, message = BAD_RECIPES[case]
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    with runs_within(5.0, timed, alarm_s=10):
        with pytest.raises(SgpoError) as exc:
            load_recipe(path)
    text = str(exc.value)
    assert one_line(text) and str(path) in text and message in text, text
    assert len(text) < 600


@pytest.mark.parametrize("content", [b"", b"# only a comment\n", "\ufeffdata:\n  source: arithmetic\n".encode(),
                                     b"data:\n  source: arithmetic\n\r\n", b"---\n...\n"])
def test_odd_but_valid_recipe_files_load(tmp_path, content):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    assert isinstance(load_recipe(path), Recipe)


BAD_OVERRIDES = {
    "a..b=1": "'a..b' has an empty part",
    "data.=1": "has an empty part",
    ".=1": "has an empty part",
    "=x": "expected dotted.key=value",
    "nonsense": "expected dotted.key=value",
    "generate.sampling.num_samples=[1": "--set 'generate.sampling.num_samples=[1': the value is not valid YAML",
    "data.source={": "the value is not valid YAML",
    "data.source=\x00": "the value is not valid YAML",
    "data.source=*a": "found undefined alias",
    "x=!!python/object:os.system": "could not determine a constructor",
    "data.source=" + "9" * 5_000: "the value is not valid YAML",
    "ü.x=1": "invalid recipe key 'ü'",
    "data.source.x=1": "invalid recipe key 'data.source'",
    "score.beta.x=1": "invalid recipe key 'score.beta'",
    "generate.sampling=3": "invalid recipe key 'generate.sampling'",
    "generate.sampling.num_samples=1e999": "invalid recipe key 'generate.sampling.num_samples'",
    "judge.options=[" + "[" * 70 + "]" * 70 + "]": "nested more than 64",
}


@pytest.mark.parametrize("override", sorted(BAD_OVERRIDES))
def test_hostile_overrides_are_one_line_errors_naming_the_key(override):
    with pytest.raises(SgpoError) as exc:
        load_recipe(None, [override])
    text = str(exc.value)
    assert one_line(text) and BAD_OVERRIDES[override] in text and len(text) < 600, text


yaml_tokens = st.sampled_from(["data", "generate", "sampling", "num_samples", "judge", "options", "score", "beta",
                               ":", ": ", "\n", "\n  ", "\n    ", "\t", "- ", "[", "]", "{", "}", ",", "&a ", "*a",
                               "!!", "!!str ", "!!int ", "!!binary ", "<<: ", "? ", "|", ">", "#", "'", '"', "---",
                               "...", "%YAML 1.1\n", "1", "-1", "1e400", ".nan", "9" * 30, "null", "~", "é", "\x00",
                               "\ufeff", "\u2028", "x"])
yaml_text = st.lists(st.one_of(yaml_tokens, st.text(max_size=3)), max_size=30).map("".join)


@FUZZ
@given(st.one_of(yaml_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=200)))
def test_any_recipe_file_loads_or_is_one_line_error(tmp_path_factory, content):
    path = tmp_path_factory.getbasetemp() / "fuzz-recipe.yaml"
    path.write_bytes(content)
    try:
        assert isinstance(load_recipe(path), Recipe)
    except SgpoError as exc:
        assert one_line(str(exc)) and str(path) in str(exc), str(exc)


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.sampled_from(["data.source", "score.beta", "generate.sampling.num_samples",
                                                     "judge.options.x", "a..b", "", ".", "ü"]), yaml_text),
                          yaml_text), max_size=3))
def test_any_override_applies_or_is_one_line_error(pairs):
    overrides = [f"{key}={value}" for key, value in pairs]
    try:
        assert isinstance(load_recipe(None, overrides), Recipe)
    except SgpoError as exc:
        assert one_line(str(exc)), str(exc)


# --- the data loader ---------------------------------------------------------------------------------------

GOOD = json.dumps({"problem": "What is 1 + 1?", "solution": "1 + 1 = 2", "answer": "2"})
JSONL = "".join(json.dumps({"problem": f"What is {i} + 1?", "solution": "s", "answer": str(i + 1)}) + "\n"
                for i in range(20))
JSONL_LINES = JSONL.splitlines()


def _with_line(k: int, bad: str) -> bytes:
    """JSONL whose line k (1-based) is `bad`."""
    lines = JSONL_LINES[:k - 1] + [bad] + JSONL_LINES[k - 1:]
    return ("\n".join(lines) + "\n").encode()


BAD_DATA = {
    # JSONL: every error names the line
    "truncated last line.jsonl": (_with_line(21, GOOD[:20]), "line 21: not valid JSON"),
    "truncated line 17.jsonl": (_with_line(17, GOOD[:-3]), "line 17: not valid JSON"),
    "a list line.jsonl": (_with_line(3, "[1, 2]"), "line 3: not a JSON object (it is a list)"),
    "a number line.jsonl": (_with_line(5, "42"), "line 5: not a JSON object (it is a number)"),
    "a null line.jsonl": (_with_line(2, "null"), "line 2: not a JSON object (it is null)"),
    "two objects on a line.jsonl": (_with_line(4, GOOD + " " + GOOD), "line 4: not valid JSON"),
    "nul bytes.jsonl": (_with_line(6, "\x00\x00"), "line 6: not valid JSON"),
    "raw nul in a string.jsonl": (_with_line(7, GOOD.replace("1 + 1", "1\x00+ 1")), "line 7: not valid JSON"),
    "NaN.jsonl": (_with_line(8, '{"problem": "p", "answer": NaN}'), "line 8: not readable JSON (NaN"),
    "huge integer.jsonl": (_with_line(9, '{"problem": "p", "meta": ' + "9" * 30 + "}"), "line 9: not readable JSON"),
    "5000-digit integer.jsonl": (_with_line(9, '{"problem": "p", "answer": ' + "9" * 5000 + "}"), "line 9"),
    "deep nesting.jsonl": (_with_line(10, '{"x": ' + "[" * 5_000 + "]" * 5_000 + "}"), "line 10: not readable JSON"),
    "u2028 after the object.jsonl": (_with_line(11, GOOD + "\u2028"), "line 11: not valid JSON"),
    "form feed line.jsonl": (_with_line(12, "\x0c"), "line 12: not valid JSON"),
    "mixed types in a column.jsonl": (
        ("".join(json.dumps({"problem": f"p{i}", "solution": "s", "answer": "1", "meta": 1}) + "\n" for i in range(30))
         + json.dumps({"problem": "q", "solution": "s", "answer": "1", "meta": True}) + "\n").encode(),
        "line 31: its values do not fit the columns of the lines before it"),
    "nested type clash.jsonl": (
        (json.dumps({"problem": "a", "solution": "s", "answer": "1", "meta": {"k": 1}}) + "\n\n"
         + json.dumps({"problem": "b", "solution": "s", "answer": "1", "meta": [1]}) + "\n").encode(),
        "line 3: its values do not fit"),
    "latin-1.jsonl": ('{"problem": "caf\xe9"}\n'.encode("latin-1"), "line 1: not UTF-8 text"),
    "latin-1 on line 3.jsonl": (JSONL_LINES[0].encode() + b"\n\n" + '{"problem": "caf\xe9"}\n'.encode("latin-1"),
                                "line 3: not UTF-8 text"),
    "binary.jsonl": (bytes(range(256)), "not UTF-8 text"),
    "utf-16.jsonl": (JSONL.encode("utf-16"), "line 1"),
    "wrong columns.jsonl": (b'{"q": "a"}\n', "column(s) 'problem', 'solution', 'answer' not found"),
    "empty problem.jsonl": ((JSONL + '{"problem": " ", "solution": "s", "answer": "1"}\n').encode(),
                            "row 21 has an empty problem"),
    "null problem.jsonl": ((JSONL + '{"problem": null, "solution": "s", "answer": "1"}\n').encode(),
                           "row 21 has an empty problem"),
    "empty.jsonl": (b"", "has no rows"),
    "only blank lines.jsonl": (b"\n\n \t\n\r\n", "has no rows"),
    # JSON lists
    "truncated list.json": (("[" + GOOD + ",\n" + GOOD[:10]).encode(), "line 2 column 11: not valid JSON"),
    "list of numbers.json": (b"[1, 2]", "item 0 of the list is a number, not an object"),
    "list with a number.json": (("[" + GOOD + ", 5]").encode(), "item 1 of the list is a number"),
    "list of lists.json": (b"[[{}]]", "item 0 of the list is a list"),
    "a string.json": (b'"hello"', "line 1: not a JSON object (it is a string)"),
    "empty.json": (b"", "has no rows"),
    "empty list.json": (b"[]", "has no rows"),
    # CSV: every error names the row (1-based: row 1 is the first data row, as the other messages) and its line
    "header only.csv": (b"problem,solution,answer\n", "has no rows"),
    "empty.csv": (b"", "has no rows"),
    "short row.csv": (b"problem,solution,answer\na,b,c\nd,e\n", "row 2 (line 3) has 2 field(s) but the header has 3"),
    "long row.csv": (b"problem,solution,answer\na,b,c\nd,e,f\ng,h,i,j\n", "row 3 (line 4) has 4 field(s)"),
    "trailing comma.csv": (b"problem,solution,answer\na,b,c,\n", "row 1 (line 2) has 4 field(s)"),
    "quoted line break before a bad row.csv": (b'problem,solution,answer\n"a\nb",c,d\ne,f\n',
                                               "row 2 (line 4) has 2 field(s)"),
    "unterminated quote.csv": (b'problem,solution,answer\na,b,c\n"d,e,f\ng,h,i\n', "row 2 (line 3): unexpected end"),
    "text after a quote.csv": (b'problem,solution,answer\na,b,c\n"d"x,e,f\n', "row 2 (line 3): ',' expected"),
    "nul byte.csv": (b"problem,solution,answer\na,b,c\nd\x00,e,f\n", "line 3: holds a NUL byte"),
    "latin-1.csv": ("problem,solution,answer\ncaf\xe9,b,c\n".encode("latin-1"), "line 2: not UTF-8 text"),
    "duplicate column.csv": (b"problem,problem,solution,answer\na,b,c,d\n", "names column 'problem' more than once"),
    "empty header names.csv": (b",,\na,b,c\n", "names column '' more than once"),
    "wrong columns.csv": (b"q,s,a\na,b,c\n", "column(s) 'problem', 'solution', 'answer' not found"),
    "semicolons.csv": (b"problem;solution;answer\na;b;c\n", "not found (columns present: problem;solution;answer)"),
    "empty problem.csv": (b"problem,solution,answer\na,b,c\n,b,c\n", "row 2 has an empty problem"),
    "binary.csv": (bytes(range(256)) * 3, "not UTF-8 text"),
    # Parquet
    "text.parquet": (b"this is not parquet\n", "could not be read as parquet"),
    "empty.parquet": (b"", "could not be read as parquet"),
    "csv in disguise.parquet": (b"problem,solution,answer\na,b,c\n", "check that it is a Parquet file"),
    # other names
    "no suffix": (JSONL.encode(), "unsupported format (no suffix)"),
    "prompts.txt": (JSONL.encode(), "unsupported format .txt"),
}


@pytest.mark.parametrize("name", sorted(BAD_DATA))
def test_hostile_data_files_are_one_line_errors_naming_file_and_place(tmp_path, name):
    content, message = BAD_DATA[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SgpoError) as exc:
        load_prompts(DataConfig(source=str(path)))
    text = str(exc.value)
    assert one_line(text) and f"data file {path}" in text and message in text, text


def test_a_truncated_parquet_file_is_named(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"problem": ["a"], "solution": ["b"], "answer": ["c"]}), path)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(SgpoError, match=rf"data file {path} could not be read as parquet"):
        load_prompts(DataConfig(source=str(path)))


@pytest.mark.parametrize("name, content", [
    ("bom.jsonl", ("\ufeff" + JSONL).encode()),
    ("crlf.jsonl", JSONL.replace("\n", "\r\n").encode()),
    ("blank lines.jsonl", JSONL.replace("\n", "\n\n  \n").encode()),
    ("bom.csv", "\ufeffproblem,solution,answer\na,b,c\n".encode()),
    ("cr line ends.csv", b"problem,solution,answer\ra,b,c\rd,e,f\r"),
    ("quoted.csv", b'problem,solution,answer\n"a, ""quoted""\r\nline",b,c\n\nd,,\n'),
    ("stray quote inside a field.csv", b'problem,solution,answer\na"b,c,d\n'),
])
def test_odd_but_valid_data_files_load(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    table = load_prompts(DataConfig(source=str(path)))
    assert table.num_rows >= 1 and all(p.strip() for p in table["problem"].to_pylist())


def test_csv_keeps_text_and_reads_empty_fields_as_null(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b'problem,solution,answer,id\n"a, ""quoted""\r\nline",,007,x1\nb,s,,x2\n')
    table = load_prompts(DataConfig(source=str(path), columns={"prompt_id": "id"}))
    assert table["problem"].to_pylist() == ['a, "quoted"\r\nline', "b"]
    assert table["reference_solution"].to_pylist() == [None, "s"]
    assert table["reference_answer"].to_pylist() == ["007", None]


problem_text = st.text(min_size=1, max_size=30).filter(str.strip)
BAD_LINES = ["{", '{"problem": "x"', "[1]", "7", '"s"', "null", "true", "NaN", '{"problem": NaN}', "\x00",
             '{"a": 1} {"b": 2}', "{'problem': 'single quotes'}", '{"a": ' + "1" * 25 + "}"]


@FEW
@given(st.lists(problem_text, min_size=1, max_size=12, unique=True), st.data())
def test_jsonl_names_the_first_bad_line_exactly(tmp_path_factory, problems, data):
    lines = [json.dumps({"problem": p, "solution": "s", "answer": "1"}, ensure_ascii=data.draw(st.booleans()))
             for p in problems]
    for i in sorted(data.draw(st.sets(st.integers(0, len(lines)), max_size=3)), reverse=True):
        lines.insert(i, data.draw(st.sampled_from(["", " ", "\t", "\r"])))  # blank lines count as lines
    path = tmp_path_factory.getbasetemp() / "fuzz.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load_prompts(DataConfig(source=str(path)))["problem"].to_pylist() == problems  # the clean file reads

    k = data.draw(st.integers(0, len(lines)))
    lines.insert(k, data.draw(st.sampled_from(BAD_LINES)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SgpoError) as exc:
        load_prompts(DataConfig(source=str(path)))
    assert one_line(str(exc.value)) and f"data file {path} line {k + 1}:" in str(exc.value), (str(exc.value), k)


csv_field = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)


@FEW
@given(st.lists(problem_text.filter(lambda p: "\x00" not in p), min_size=1, max_size=10, unique=True), st.data())
def test_csv_names_the_first_bad_row_and_its_line_exactly(tmp_path_factory, problems, data):
    rows = [[p, data.draw(csv_field), data.draw(csv_field)] for p in problems]
    path = tmp_path_factory.getbasetemp() / "fuzz.csv"

    def write(records):
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(records)  # "\r\n" ends a record; a field holding \r or \n is quoted
        path.write_bytes(buffer.getvalue().encode())
        return buffer.getvalue()

    write([["problem", "solution", "answer"], *rows])
    table = load_prompts(DataConfig(source=str(path)))
    assert table["problem"].to_pylist() == problems  # the clean file reads, quotes and line breaks and all
    assert table["reference_solution"].to_pylist() == [r[1] or None for r in rows]

    k = data.draw(st.integers(0, len(rows) - 1))
    width = data.draw(st.sampled_from([1, 2, 4, 5]))
    rows[k] = (rows[k] + ["x", "y"])[:width]
    text = write([["problem", "solution", "answer"], *rows])
    before = text[:_nth_record_start(text, k + 1)]
    line = len(io.StringIO(before, newline="").readlines()) + 1  # lines as an editor counts them
    with pytest.raises(SgpoError) as exc:
        load_prompts(DataConfig(source=str(path)))
    assert one_line(str(exc.value)) and f"row {k + 1} (line {line}) has {width} field(s)" in str(exc.value), str(exc.value)


def _nth_record_start(text: str, n: int) -> int:
    """The offset where CSV record n (0: the header) starts."""
    reader = csv.reader(io.StringIO(text, newline=""))
    lines = io.StringIO(text, newline="").readlines()
    for _ in range(n):
        next(reader)
    return sum(len(line) for line in lines[:reader.line_num])


@FUZZ
@given(st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]),
       st.one_of(st.binary(max_size=300), hostile_text.map(lambda t: t.encode("utf-8"))))
def test_any_data_file_loads_or_is_one_line_error_naming_it(tmp_path_factory, suffix, content):
    path = tmp_path_factory.getbasetemp() / f"fuzz-any{suffix}"
    path.write_bytes(content)
    try:
        table = load_prompts(DataConfig(source=str(path), columns={"reference_solution": None,
                                                                   "reference_answer": None}))
    except SgpoError as exc:
        assert one_line(str(exc)) and f"data file {path}" in str(exc), str(exc)
    else:
        assert table.num_rows >= 1


@pytest.mark.parametrize("source", ["~nobody-such-user/x.jsonl", "a\x00b.jsonl", "/", ".", "x" * 5_000 + ".jsonl",
                                    "not a hub id!.jsonl"])
def test_odd_data_sources_are_one_line_errors(source):
    with pytest.raises(SgpoError) as exc:
        load_prompts(DataConfig(source=source))
    assert one_line(str(exc.value))


# --- --shard -----------------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.none(), hostile_text, st.from_regex(r"\s*\d{1,12}\s*/\s*\d{1,12}\s*", fullmatch=True),
                 st.just("1" * 5_000 + "/2")))
def test_shard_spec_parses_or_is_one_line_error(text):
    try:
        spec = ShardSpec.parse(text)
    except SgpoError as exc:
        assert one_line(str(exc)) and "--shard" in str(exc)
    else:
        assert 0 <= spec.index < spec.count


@given(st.integers(1, 10**6).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_shard_spec_reads_every_valid_share(case):
    index, count = case
    assert ShardSpec.parse(f" {index} / {count} ") == ShardSpec(index, count)


# --- run folders -------------------------------------------------------------------------------------------


def _complete_stage(run: Path) -> StageFolder:
    stage = StageFolder(run, "generate")
    stage.start({"a": 1}, "fp", num_shards=2)
    for i in range(2):
        stage.write_shard(i, pa.table({"prompt_id": [f"p{i}"], "x": [i]}), f"in-{i}", {}, {})
    stage.finish({0: "in-0", 1: "in-1"}, lambda markers: {})
    return stage


def _manifest_with(**changes):
    def damage(stage):
        manifest = json.loads(stage.manifest_path.read_text())
        manifest.update(changes)
        stage.manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if v is not None}))
    return damage


DAMAGE = {
    "truncated manifest": (lambda s: s.manifest_path.write_bytes(s.manifest_path.read_bytes()[:40]),
                           "manifest.json: the manifest is not readable JSON"),
    "empty manifest": (lambda s: s.manifest_path.write_bytes(b""), "manifest.json: the manifest is not readable JSON"),
    "binary manifest": (lambda s: s.manifest_path.write_bytes(bytes(range(256))), "manifest is not readable JSON"),
    "deep manifest": (lambda s: s.manifest_path.write_bytes(b"[" * 100_000), "manifest is not readable JSON"),
    "manifest is a list": (lambda s: s.manifest_path.write_text("[]"), "manifest is not a JSON object"),
    "manifest lacks keys": (lambda s: s.manifest_path.write_text('{"status": "complete"}'), "the manifest lacks stage"),
    "complete manifest lacks rows": (_manifest_with(rows=None), "manifest of a complete stage lacks rows"),
    "num_shards is text": (_manifest_with(num_shards="2"), "num_shards is '2', not a shard count"),
    "num_shards is negative": (_manifest_with(num_shards=-1), "num_shards is -1"),
    "manifest is a folder": (lambda s: (s.manifest_path.unlink(), s.manifest_path.mkdir()), "is not a file"),
    "part is text": (lambda s: s.part(1).write_text("not parquet"), "part-00001.parquet is missing or not a readable"),
    "part truncated": (lambda s: s.part(1).write_bytes(s.part(1).read_bytes()[:-20]), "part-00001.parquet is missing"),
    "part missing": (lambda s: s.part(1).unlink(), "part-00001.parquet is missing or not a readable Parquet file"),
    "part damaged inside": (lambda s: s.part(1).write_bytes(
        (lambda b: b[:8] + bytes(x ^ 0xFF for x in b[8:60]) + b[60:])(s.part(1).read_bytes())),
        "part-00001.parquet could not be read"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_run_folder_is_one_line_error_naming_the_file_and_the_fix(tmp_path, case):
    damage, message = DAMAGE[case]
    damage(_complete_stage(tmp_path))
    with pytest.raises(SgpoError) as exc:
        read_stage(tmp_path, "generate")
    text = str(exc.value)
    assert one_line(text) and message in text, text
    assert f"delete {tmp_path / 'generate'} and rerun `sgpo-data generate --out {tmp_path}`" in text


@pytest.mark.parametrize("content", [b"", b"{", b"[1]", b"{}", bytes(range(256)), b'{"rows": 1}'])
def test_a_damaged_marker_is_one_line_error_naming_it(tmp_path, content):
    stage = _complete_stage(tmp_path)
    stage.marker(1).write_bytes(content)
    for call in (lambda: stage.needs_work(1, "in-1"), lambda: StageFiles(tmp_path, "generate").missing_shards()):
        with pytest.raises(SgpoError) as exc:
            call()
        assert one_line(str(exc.value)) and f"{stage.marker(1)}: the completion marker" in str(exc.value)
        assert "delete it (the shard is redone)" in str(exc.value)


@FUZZ
@given(st.one_of(st.binary(max_size=200), hostile_text.map(str.encode),
                 st.fixed_dictionaries({"stage": st.just("generate"), "config": st.just({}), "input_fingerprint":
                                        st.just("fp"), "identity": st.just("id"), "output_fingerprint": st.just("o")},
                                       optional={"status": st.sampled_from(["running", "complete", 3]),
                                                 "num_shards": st.one_of(st.integers(-2, 3), st.text(max_size=2)),
                                                 "rows": st.integers(0, 3), "errors": st.just({}),
                                                 "statistics": st.just({})})
                 .map(lambda d: json.dumps(d).encode())))
def test_any_manifest_reads_or_is_one_line_error(tmp_path_factory, content):
    run = tmp_path_factory.getbasetemp() / "fuzz-run"
    (run / "generate").mkdir(parents=True, exist_ok=True)
    (run / "generate" / "manifest.json").write_bytes(content)
    for call in (lambda: StageFiles(run, "generate").missing_shards(), lambda: read_stage(run, "generate")):
        try:
            call()
        except SgpoError as exc:
            assert one_line(str(exc)), str(exc)


# --- the CLI: an SgpoError is one line and exit code 2, never a traceback -----------------------------------


@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from sgpo_data_cli.app import app

    def invoke(*args):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code, result.output.strip()
    return invoke


@pytest.mark.parametrize("content", [b"\xff\xfe garbage \x00", (LAUGHS + "data: *i\n").encode(), b"- a list\n",
                                     b"data:\n\tsource: x\n"])
def test_cli_turns_a_hostile_recipe_into_one_line_and_exit_2(tmp_path, cli, content):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(content)
    for command in (["generate", "--out", tmp_path / "run"], ["judge", "--out", tmp_path / "run"],
                    ["train", "--out", tmp_path / "train"], ["run", recipe, "--out", tmp_path / "run"]):
        args = command if command[0] == "run" else [*command, "--recipe", recipe]
        code, output = cli(*args)
        assert code == 2 and one_line(output) and output.startswith(f"error: recipe {recipe}"), output


@pytest.mark.parametrize("args, message", [
    (["--set", "generate.sampling.num_samples=[1"], "the value is not valid YAML"),
    (["--set", "a..b=1"], "has an empty part"),
    (["--shard", "1" * 5_000 + "/2"], "expected i/N"),
    (["--shard", "3/3"], "expected i/N"),
])
def test_cli_turns_hostile_flags_into_one_line_and_exit_2(tmp_path, cli, args, message):
    code, output = cli("generate", "--out", tmp_path / "run", *args)
    assert code == 2 and one_line(output) and message in output, output


def test_cli_refuses_an_out_that_is_a_file(tmp_path, cli):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        code, output = cli("score", "--out", out)
        assert code == 2 and one_line(output) and f"{tmp_path / 'file'} is a file, not a folder" in output, output


def test_cli_names_a_damaged_run_folder(tmp_path, cli):
    _complete_stage(tmp_path).manifest_path.write_text('{"stage": "gen')
    code, output = cli("report", tmp_path)
    assert code == 2 and one_line(output) and "manifest.json: the manifest is not readable JSON" in output, output


# --- the arith judge, and eval-judge's data files ----------------------------------------------------------


@pytest.mark.parametrize("step", ["-" * 10_000 + "1 + 1 = 2", "1/3 = 0." + "3" * 5_000, "(" * 10_000 + "1 + 1 = 2",
                                  " * ".join(["7"] * 3_000) + " = 1", "1" * 10_000 + " * 2 = 3", "x1 " * 2 * N])
@TIMED
def test_arith_judge_never_raises_and_skips_what_is_too_big_to_check(step, timed):
    from sgpo_data.judges.arith import ArithJudge

    with runs_within(1.0, timed, alarm_s=5):
        verdict = ArithJudge().decide(JudgeInput("p", None, [step]))
    assert (verdict.first_error_step, verdict.status) == (-1, JudgeStatus.OK)


@pytest.mark.parametrize("name, content, message", [
    ("latin.json", '[{"problem": "caf\xe9"}]'.encode("latin-1"), "line 1 is not UTF-8 text"),
    ("deep.json", b"[" * 100_000, "not valid JSON (nested too deeply)"),
    ("deep.jsonl", b"{}\n" + b"[" * 100_000, "line 2 is not JSON (nested too deeply)"),
    ("big.jsonl", b'{"label": ' + b"9" * 5_000 + b"}\n", "line 1 is not JSON (a number with too many digits)"),
    ("broken.json", b'[\n{"label": }]', "not valid JSON (Expecting value at line 2, column 11)"),
])
def test_eval_judge_data_errors_are_sgpo_errors(tmp_path, name, content, message):
    from sgpo_data.judges.evaluate import load_processbench

    (tmp_path / name).write_bytes(content)
    with pytest.raises(SgpoError) as error:
        load_processbench(str(tmp_path / name))
    assert one_line(str(error.value)) and str(error.value).startswith(f"{tmp_path / name}: {message}"), error.value
