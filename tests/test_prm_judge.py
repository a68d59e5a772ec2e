"""The `prm` judge on a tiny random token-classification model built here (SmolLM2's tokenizer plus <extra_0>):
its probabilities are the model's own at the separators, the threshold picks the first error, batches with
padding agree with single items, and bad inputs are row errors. Building the model makes these tests slow
(conftest: `prm_path`, `shipped_tokenizer`); only the check of the options needs no model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgpo_data.errors import SgpoError
from sgpo_data.judges import JudgeInput, get_judge
from sgpo_data.judges.prm import QWEN_PRM_SYSTEM, PRMJudge, PRMOptions
from sgpo_data.outcomes import ErrorKind
from sgpo_data.schema import JudgeStatus

SEP = "<extra_0>"

ITEMS = [
    JudgeInput("Tom has 3 apples and buys 4 more. How many?", "7", ["3 + 4 = 7", "He has 7 apples.", "The answer is 7."]),
    JudgeInput("What is 12 * 3?", None, ["12 * 3 = 36"]),
    JudgeInput("A train goes 60 km/h for 2 hours, then 40 km/h for 3 hours. How far in total?", "240",
               ["60 * 2 = 120 km in the first part.", "40 * 3 = 130 km in the second part.", "120 + 130 = 250",
                "So the train went 250 km.", "The answer is \\boxed{250}."]),
    JudgeInput("5 - 2?", "3", ["  5 - 2 = 3  \n", "Answer: 3"]),
]


def _tiny_prm(path: Path, tokenizer_source: str, head_std: float = 0.3) -> str:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForTokenClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    tokenizer.add_tokens([SEP], special_tokens=True)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096, num_labels=2,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2ForTokenClassification(config)
    with torch.no_grad():  # a wider head than the default init, so the step probabilities spread out
        model.score.weight.normal_(0.0, head_std)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def shipped_tokenizer() -> str:
    from sgpo_data.backends.models import resolve_model

    return resolve_model(None)[0]


@pytest.fixture(scope="module")
def prm_path(tmp_path_factory, shipped_tokenizer) -> str:
    return _tiny_prm(tmp_path_factory.mktemp("prm"), shipped_tokenizer)


@pytest.fixture(scope="module")
def reference(prm_path):
    """The tiny PRM loaded directly, for forward passes computed here."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    return AutoModelForTokenClassification.from_pretrained(prm_path).eval(), AutoTokenizer.from_pretrained(prm_path)


def _judge(path: str, **options) -> PRMJudge:
    return get_judge("prm", None, {"model": path, "device": "cpu", **options})


def _probabilities(verdict) -> list[float]:
    assert verdict.status == JudgeStatus.OK, verdict.error
    return json.loads(verdict.raw)


def _said(verdict) -> tuple:
    """A verdict less its timing."""
    return (verdict.first_error_step, verdict.status, verdict.raw, verdict.error_kind, verdict.error, verdict.judge)


def _encode(tokenizer, item: JudgeInput):
    messages = [{"role": "system", "content": QWEN_PRM_SYSTEM}, {"role": "user", "content": item.problem},
                {"role": "assistant", "content": SEP.join(s.strip() for s in item.steps) + SEP}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids


def _direct(reference, item: JudgeInput) -> list[float]:
    """P(step correct) at each separator, as the Qwen2.5-Math-PRM model card computes it."""
    import torch

    model, tokenizer = reference
    ids = _encode(tokenizer, item)
    with torch.no_grad():
        probabilities = torch.softmax(model(input_ids=ids).logits, dim=-1)[0, :, 1]
    return probabilities[ids[0] == tokenizer.convert_tokens_to_ids(SEP)].tolist()


def test_the_step_probabilities_are_the_models_own_at_each_separator(prm_path, reference, device):
    judge = _judge(prm_path, device=device, dtype="float32")
    for item in ITEMS:
        verdict = judge.decide(item)
        direct = _direct(reference, item)
        assert len(direct) == len(item.steps)
        assert _probabilities(verdict) == pytest.approx(direct, abs=1e-4)
        assert verdict.judge == prm_path and verdict.error is None and verdict.seconds > 0
        assert verdict.first_error_step == next((k for k, p in enumerate(direct) if p < 0.5), -1)
    assert len(set(_probabilities(judge.decide(ITEMS[2])))) > 1  # the steps are scored apart


@pytest.mark.parametrize(("bias", "expected"), [((-4.0, 4.0), -1), ((4.0, -4.0), 0)])
def test_a_constant_head_finds_no_error_or_the_first_step(prm_path, bias, expected):
    import torch

    judge = _judge(prm_path)
    judge.load()
    with torch.no_grad():
        judge.model.score.weight.zero_()
        judge.model.score.bias = torch.nn.Parameter(torch.tensor(bias))
    for item in ITEMS:
        verdict = judge.decide(item)
        assert verdict.first_error_step == expected
        assert _probabilities(verdict) == pytest.approx([0.9997 if expected == -1 else 0.0003] * len(item.steps),
                                                        abs=1e-4)


def test_the_first_step_below_the_threshold_is_the_first_error(prm_path):
    """A head set by hand from the hidden states at the separators: step 2 gets logit -1, steps 0 and 1 at least +1."""
    import torch

    judge = _judge(prm_path)
    judge.load()
    model, tokenizer, item = judge.model, judge.tokenizer, ITEMS[2]
    ids = _encode(tokenizer, item)
    with torch.no_grad():
        h = model.model(input_ids=ids).last_hidden_state[0, ids[0] == tokenizer.convert_tokens_to_ids(SEP)]
        d0, d1 = h[0] - h[2], h[1] - h[2]
        u = d0 / d0.norm() + d1 / d1.norm()  # (h0 - h2).u > 0 and (h1 - h2).u > 0
        scale = 2 / min(d0 @ u, d1 @ u)
        model.score.weight.copy_(torch.stack([torch.zeros_like(u), scale * u]))
        model.score.bias = torch.nn.Parameter(torch.tensor([0.0, float(-scale * (h[2] @ u) - 1)]))
    direct = _direct((model, tokenizer), item)
    assert direct[2] < 0.3 and min(direct[0], direct[1]) > 0.7
    verdict = judge.decide(item)
    assert verdict.first_error_step == 2
    assert _probabilities(verdict) == pytest.approx(direct, abs=1e-4)
    for threshold, expected in [(min(direct) - 1e-3, -1), (max(direct) + 1e-3, 0), (direct[2] + 1e-3, 2)]:
        judge.options.threshold = threshold
        assert judge.decide(item).first_error_step == expected


def test_a_padded_batch_gives_the_verdicts_of_single_items(prm_path, device):
    items = ITEMS + [JudgeInput("Why?", None, ["Because."]), JudgeInput("Empty", None, [])]
    one = _judge(prm_path, device=device, dtype="float32")
    probabilities = sorted(p for item in items for p in _probabilities(one.decide(item)))
    gaps = [(b - a, (a + b) / 2) for a, b in zip(probabilities, probabilities[1:])]
    threshold = max(gaps[len(gaps) // 4: 3 * len(gaps) // 4])[1]  # well away from every probability
    one.options.threshold = threshold
    single = [one.decide(item) for item in items]
    batched = _judge(prm_path, threshold=threshold, batch_size=3, device=device, dtype="float32")
    batched.load()
    batched.tokenizer.pad_token = None  # a tokenizer without a pad token pads with eos
    assert batched.tokenizer.pad_token_id is None
    together = batched.decide_many(items)
    assert [v.first_error_step for v in together] == [v.first_error_step for v in single]
    assert len({v.first_error_step for v in single}) > 1
    for a, b in zip(together, single):
        assert _probabilities(a) == pytest.approx(_probabilities(b), abs=1.5e-4)
    assert single[-1].first_error_step == -1 and single[-1].raw == "[]"


def test_a_tuple_output_reads_its_first_element(prm_path):
    """A remote-code PRM (Qwen2.5-Math-PRM) returns a tuple whose [0] is the logits."""
    import torch

    class TupleModel(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return (self.inner(input_ids=input_ids, attention_mask=attention_mask).logits,)

    plain = _judge(prm_path).decide_many(ITEMS)
    judge = _judge(prm_path)
    judge.load()
    judge.model = TupleModel(judge.model)
    assert [_said(v) for v in judge.decide_many(ITEMS)] == [_said(v) for v in plain]


def test_a_step_holding_the_separator_is_a_row_error_and_the_batch_goes_on(prm_path):
    bad = JudgeInput("What is 2 + 2?", "4", ["2 + 2 = 4", f"so 4{SEP} or 5", "The answer is 4."])
    judge = _judge(prm_path)
    verdicts = judge.decide_many([ITEMS[0], bad, ITEMS[2]])
    error = verdicts[1]
    assert error.status == JudgeStatus.ERROR and error.error_kind == ErrorKind.BAD_REQUEST
    assert error.first_error_step is None and error.raw is None
    assert "step 1 contains the step separator" in error.error and "\n" not in error.error
    assert _said(verdicts[0]) == _said(judge.decide(ITEMS[0])) and _said(verdicts[2]) == _said(judge.decide(ITEMS[2]))
    in_problem = judge.decide(JudgeInput(f"What is {SEP} 2 + 2?", "4", ["4"]))
    assert in_problem.error_kind == ErrorKind.BAD_REQUEST and "the problem contains" in in_problem.error


def test_an_input_longer_than_max_length_is_a_row_error(prm_path):
    judge = _judge(prm_path, max_length=60)
    short, long = JudgeInput("1+1?", None, ["2"]), ITEMS[2]
    verdicts = judge.decide_many([short, long])
    assert verdicts[0].status == JudgeStatus.OK
    assert verdicts[1].status == JudgeStatus.ERROR and verdicts[1].error_kind == ErrorKind.BAD_REQUEST
    assert "longer than 60 (judge.options.max_length)" in verdicts[1].error


def test_options_are_checked_before_anything_loads():
    with pytest.raises(SgpoError, match=r"judge\.options\.nope"):
        get_judge("prm", None, {"model": "/no/such/prm", "nope": 1})  # no model is needed to refuse them
    with pytest.raises(SgpoError, match=r"judge\.options\.model"):
        get_judge("prm", None, {})
    with pytest.raises(SgpoError, match=r"judge\.options\.threshold"):
        get_judge("prm", None, {"model": "/no/such/prm", "threshold": 1.5})
    judge = get_judge("prm", None, {"model": "/no/such/prm"})  # lazy: nothing loads yet
    assert isinstance(judge, PRMJudge) and judge.model is None and judge.loaded_model_name() == "/no/such/prm"
    with pytest.raises(SgpoError, match=r"judge\.options\.model: model folder /no/such/prm not found"):
        judge.decide(ITEMS[0])
    assert PRMOptions(model="x").step_separator == SEP


def test_a_separator_of_several_tokens_is_refused_at_load(prm_path):
    judge = _judge(prm_path, step_separator="<not one token>")
    with pytest.raises(SgpoError, match=r"judge\.options\.step_separator: '<not one token>' is \d+ tokens"):
        judge.decide(ITEMS[0])


def test_a_model_without_a_two_class_token_head_is_refused(tmp_path, shipped_tokenizer):
    """Not a ...ForTokenClassification: loaded with AutoModel, whose hidden states are not 2-class logits."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    tokenizer = AutoTokenizer.from_pretrained(shipped_tokenizer)
    tokenizer.add_tokens([SEP], special_tokens=True)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    Qwen2Model(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = _judge(str(tmp_path))
    with pytest.raises(SgpoError, match=r"not per-token logits \[batch, tokens, 2\]"):
        judge.decide(ITEMS[0])
    assert type(judge.model).__name__ == "Qwen2Model"


@pytest.mark.slow  # the math-verify grader runs in a worker process
def test_a_pipeline_run_with_the_prm_judge(tmp_path, prm_path):
    """generate (a tiny random policy), grade, judge with the PRM, score, export: every judged row is decided by
    the PRM and keeps its step probabilities."""
    from sgpo_data.config import load_recipe
    from sgpo_data.run_reader import read_stage
    from sgpo_data.stages import run_all
    from tests.helpers import tiny_model, tiny_overrides

    policy = tiny_model(tmp_path / "policy")
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml",
                         tiny_overrides(num_problems=2, num_samples=2, max_new_tokens=24)
                         + [f"generate.model={policy}", "judge.name=prm", "judge.options={}",
                            f"judge.options.model={prm_path}", "judge.options.device=cpu"])
    run_all(recipe, tmp_path / "run")
    rows = read_stage(tmp_path / "run", "judge").to_pylist()
    judged = [r for r in rows if r["judge_status"] != JudgeStatus.SKIPPED_CORRECT]
    assert judged
    for row in judged:
        assert row["judge_status"] == JudgeStatus.OK and row["judge_model"] == prm_path
        assert len(json.loads(row["judge_raw"])) == len(row["steps"])
        assert row["first_error_step"] == next((k for k, p in enumerate(json.loads(row["judge_raw"])) if p < 0.5), -1)
    assert read_stage(tmp_path / "run", "export").num_rows == len(rows)
