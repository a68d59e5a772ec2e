"""One judging core for every caller: the judge stage, `SGPOReward` (TRL), verl's `compute_score` and eval-judge
give the same verdicts on the same rows; inside verl's real reward loop (Ray workers) the calls of a batch are
judged together, with a window of requests in flight, in groups; failures inside a trainer."""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sgpo_data.errors import SgpoError
from sgpo_data.integrations.reward import SGPOReward
from sgpo_data.run_reader import StageFiles
from sgpo_data_cli.app import app
from tests.fault_server import Fault, FaultServer

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
LLM_OPTIONS = {"reference": False}  # eval-judge's items have no reference solution: the prompts must match
SCORE = {"reward_map": "sigmoid", "beta": 5.0, "gamma": 0.5}  # the demo recipe's


def judge_answer(prompt: str) -> str:
    """A verdict that depends on the prompt, so that two callers agree only if they sent the same one: for a
    group prompt one line per response, for a single one a step in -1..1."""
    seed = zlib.crc32(prompt.encode())
    if found := re.search(r"grading (\d+) students", prompt):
        return "\n".join(f"response_{i}: {(seed >> i) % 3 - 1}" for i in range(int(found.group(1))))
    return str(seed % 3 - 1)


def policy_answer(k: int) -> str:
    """Three steps: a false equation (arith decides) for odd k, otherwise left to the LLM judge."""
    return f"2 + 2 = {4 + k % 2}.\n\nSo there are {k} in all.\n\nThe answer is {k}."


def judge_section(server: FaultServer, **extra) -> dict:
    return {"name": "cascade", "options": {"judges": ["arith", "llm"], "options": {"llm": LLM_OPTIONS}},
            "model": "fake", "segmenter": "paragraph",
            "backend": {"name": "openai", "options": {"base_url": server.base_url, "max_retries": 1, "timeout_s": 10}},
            **extra}


def flow(value) -> str:
    return json.dumps(value)  # YAML flow style accepts JSON


@pytest.mark.slow  # the generate stage starts math-verify worker processes
def test_the_judge_stage_sgpo_reward_verl_and_eval_judge_give_identical_verdicts(tmp_path):
    import sgpo_data.integrations.verl as verl

    with FaultServer(policy_answer=policy_answer) as policy, FaultServer(judge_answer=judge_answer) as judge:
        section = judge_section(judge)
        args = ["run", str(DEMO), "--out", str(tmp_path / "run"), "--set", "data.arithmetic.num_problems=6",
                "--set", "generate.sampling.num_samples=4", "--set", "generate.backend=openai",
                "--set", "generate.model=fake", "--set", f"generate.backend.options={{base_url: '{policy.base_url}'}}",
                *[a for key, value in section.items() for a in ("--set", f"judge.{key}={flow(value)}")]]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        rows = StageFiles(tmp_path / "run", "score").dataset().to_table().to_pylist()
        stage = [r["first_error_step"] for r in rows]
        wrong = [i for i, r in enumerate(rows) if not r["is_correct"]]
        asked_by_stage = {c.key for c in judge.log}
        assert len(wrong) >= 12 and {stage[i] for i in wrong} >= {-1, 0, 1}  # arith's 0s and the LLM's verdicts
        assert len({r["judge_status"] for r in rows} - {"ok", "skipped_correct"}) == 0

        # SGPOReward, as TRL calls it: the same responses, grouped by prompt, one call
        reward = SGPOReward(judge=section, score=SCORE)
        try:
            rewards = asyncio.run(reward([r["prompt_id"] for r in rows], [r["response"] for r in rows],
                                         solution=[r["reference_answer"] for r in rows],
                                         problem=[r["problem"] for r in rows],
                                         reference_solution=[r["reference_solution"] for r in rows]))
            assert [v.first_error_step if v else None for v in reward.last["verdicts"]] == \
                [s if not r["is_correct"] else None for s, r in zip(stage, rows)]
            assert reward.last["correct"] == [r["is_correct"] for r in rows]
            assert rewards == pytest.approx([r["reward"] for r in rows])  # the score stage's rewards
        finally:
            reward.close()

        # verl's compute_score, one concurrent call per response as its reward loop makes them
        async def verl_batch():
            return await asyncio.gather(*[verl.compute_score(
                "arithmetic", r["response"], r["reference_answer"],
                {"problem": r["problem"], "reference_solution": r["reference_solution"], "prompt_id": r["prompt_id"]},
                judge=section, score=SCORE) for r in rows])
        try:
            scored = asyncio.run(verl_batch())
        finally:
            verl.close()
        assert [s["score"] for s in scored] == pytest.approx(rewards)
        assert not any(s["sgpo_judge_failed"] or s["sgpo_no_prompt_id"] for s in scored)

        # eval-judge on the stage's own steps of the wrong responses
        items = tmp_path / "items.jsonl"
        items.write_text("".join(json.dumps({"id": str(i), "problem": rows[i]["problem"], "steps": rows[i]["steps"],
                                             "label": -1, "final_answer_correct": False}) + "\n" for i in wrong))
        sets = [a for key in ("options", "backend", "model", "segmenter")
                for a in ("--set", f"{key}={flow(section[key])}")]
        result = CliRunner().invoke(app, ["eval-judge", "--data", str(items), "--judge", "cascade",
                                          "--out", str(tmp_path / "eval"), *sets], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        found = {int(p["id"]): p["prediction"] for p in map(json.loads, (tmp_path / "eval" / "predictions.jsonl")
                                                            .read_text().splitlines())}
        assert found == {i: stage[i] for i in wrong}
        # every caller sent the judge the same prompts: no caller asked anything the stage had not
        assert {c.key for c in judge.log} == asked_by_stage


def _verl_batch(tokenizer, rows: list[dict]):
    """A verl DataProto of responses, as its rollout hands them to the reward loop."""
    import torch
    from verl import DataProto

    ids = [tokenizer(r["response"], add_special_tokens=False).input_ids for r in rows]
    width = max(map(len, ids))
    responses = torch.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(rows), 1 + width), dtype=torch.long)
    for i, row in enumerate(ids):
        responses[i, :len(row)] = torch.tensor(row)
        mask[i, :1 + len(row)] = 1
    prompts = torch.full((len(rows), 1), 1, dtype=torch.long)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, responses], dim=1)},
        non_tensors={"data_source": np.array(["arithmetic"] * len(rows), dtype=object),
                     "reward_model": np.array([{"ground_truth": r["answer"]} for r in rows], dtype=object),
                     "extra_info": np.array([r["extra_info"] for r in rows], dtype=object)})


@pytest.mark.slow  # Ray workers
def test_inside_verls_reward_loop_a_batch_is_judged_together_in_groups(tmp_path):
    """verl 0.9.1's RewardLoopManager: Ray actors running RewardLoopWorker, each awaiting one compute_score per
    response of its chunk. Every group's request is in flight at once; group mode sees whole groups;
    all_negative_groups leaves a group with a right answer alone; a response without prompt_id is counted."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("verl")
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager

    import sgpo_data.integrations.verl as verl_integration
    from sgpo_data.backends.models import resolve_model

    workers, groups, g = 2, 8, 4
    rows = []
    for p in range(groups):
        for s in range(g):
            right = p == 0 and s == 0  # group 0 has a right answer
            total = 9 if right else 10 + s
            rows.append({"response": f"2 + 3 = 5.\n\n5 + 4 = {total}.\n\nThe answer is {total}.", "answer": "9",
                         "extra_info": {"problem": f"Problem {p}: what is 2 + 3 + 4?", "prompt_id": f"p{p}"}})
    rows[-1]["extra_info"] = {"problem": rows[-1]["extra_info"]["problem"]}  # no prompt_id: judged alone
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None)[0])
    verl_dir = Path(__import__("verl").__file__).parent
    with FaultServer(judge_answer=judge_answer, latency_s=0.5) as server:
        section = {"name": "llm", "options": {"mode": "group", "constrained": False}, "scope": "all_negative_groups",
                   "backend": {"name": "openai", "options": {"base_url": server.base_url}}, "model": "fake"}
        reward = OmegaConf.load(verl_dir / "trainer/config/reward/reward.yaml")
        reward.num_workers = workers
        reward.custom_reward_function = {"path": verl_integration.__file__, "name": "compute_score",
                                         "reward_kwargs": {"judge": section, "grader_options": {"workers": 1}}}
        config = OmegaConf.create({"actor_rollout_ref": {"model": {"path": resolve_model(None)[0],
                                                                   "tokenizer_path": None}}})
        config.reward = reward
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            manager = RewardLoopManager(config)
            out = manager.compute_rm_score(_verl_batch(tokenizer, rows))
        finally:
            ray.shutdown()
        log = list(server.log)
    scores = out.batch["rm_scores"].sum(dim=1).tolist()
    extra = out.non_tensor_batch
    assert scores[0] == 1.0 and scores[1:g] == [0.0] * (g - 1)  # out of scope: its group has a right answer
    assert all(0.0 < s < 1.0 for s in scores[g:-1] if s)  # partial credit where the group verdict names a step
    assert len(set(scores[g:-1])) > 1  # a spread inside all-negative groups
    assert list(extra["sgpo_no_prompt_id"]) == [0.0] * (len(rows) - 1) + [1.0]
    assert not any(extra["sgpo_judge_failed"])
    prompts = [json.dumps(c.body["messages"]) for c in log]
    # one request per all-negative group (7 of 4 responses, the 8th split: 3 and the one without prompt_id)
    counts = sorted(int(re.search(r"grading (\d+) students", p).group(1)) if "students" in p else 1 for p in prompts)
    assert counts == [1, 3, 4, 4, 4, 4, 4, 4]
    assert server.max_in_flight >= workers and server.max_in_flight >= len(log) - 1  # all at once, not one by one


def test_a_failed_judge_request_gives_the_outcome_reward_and_is_counted_and_a_down_service_raises_one_line():
    responses = ["2 + 3 = 5.\n\nThe answer is 5.", "2 + 3 = 5.\n\n5 + 4 = 10.\n\nThe answer is 10.",
                 "2 + 3 = 6.\n\nThe answer is 6."]
    with FaultServer(judge_answer="0") as server:
        section = {"name": "llm", "options": {"constrained": False}, "model": "fake",
                   "backend": {"name": "openai", "options": {"base_url": server.base_url, "max_retries": 0,
                                                             "timeout_s": 5}}}
        reward = SGPOReward(judge=section)
        try:
            server.faults.append(Fault("status", status=400, match="5 + 4 = 10", times=1))
            logged = {}
            rewards = asyncio.run(reward(["q"] * 3, responses, solution=["9"] * 3, problem=["2 + 3 + 4?"] * 3,
                                         log_metric=lambda name, value: logged.setdefault(name, value)))
            assert rewards[1] == 0.0 and rewards[0] > 0 and rewards[2] > 0  # the failed one: its outcome, 0
            assert logged["sgpo/judge_failures"] == 1.0 and reward.judge_failures == 1
            server.stop()  # the judge service goes down
            with pytest.raises(SgpoError) as caught:
                asyncio.run(reward(["r"] * 2, responses[1:], solution=["9"] * 2, problem=["2 + 3 + 4?"] * 2))
            assert "\n" not in str(caught.value) and "127.0.0.1" in str(caught.value)
        finally:
            reward.close()


def test_bad_reward_kwargs_are_one_line_naming_the_key_before_any_request():
    import sgpo_data.integrations.verl as verl

    with FaultServer() as server:
        with pytest.raises(SgpoError, match="unknown key 'judges'"):
            asyncio.run(verl.compute_score("x", "The answer is 1.", "1", {}, judges="llm"))
        with pytest.raises(SgpoError, match=r"judge\.options.*bogus"):
            asyncio.run(verl.compute_score("x", "The answer is 1.", "2", {}, judge={
                "name": "llm", "options": {"bogus": 1},
                "backend": {"name": "openai", "options": {"base_url": server.base_url}}}))
        assert server.log == []
    verl.close()


@pytest.mark.slow  # loads the shipped model into a TRL trainer
def test_mc_samples_from_the_policy_being_trained_or_refuses_in_one_line(tmp_path):
    """mc's continuations come from the trainer's model (`attach`), never from the judge's engine; without a
    policy it refuses."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from sgpo_data.backends.models import resolve_model

    path = resolve_model(None)[0]
    orphan = SGPOReward(judge={"name": "mc", "options": {"samples": 2, "max_new_tokens": 8}})
    with pytest.raises(SgpoError, match="samples continuations from the policy being trained") as caught:
        orphan.rewards(["1 + 1 = 3.\n\nThe answer is 3."], ["2"], ["g"], ["What is 1 + 1?"])
    assert "\n" not in str(caught.value)
    orphan.close()

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    reward = SGPOReward(judge={"name": "mc", "options": {"samples": 2, "max_new_tokens": 8}})
    data = Dataset.from_dict({"prompt": [[{"role": "user", "content": "What is 1 + 1? Answer in one line."}]] * 2,
                              "solution": ["2", "2"]})
    config = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, num_generations=2,
                        max_completion_length=16, learning_rate=1e-6, report_to="none", use_cpu=True, bf16=False,
                        save_strategy="no", seed=0, logging_steps=1)
    trainer = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward], args=config,
                          train_dataset=data)
    reward.attach(trainer)
    sampled = []
    generate = type(model).generate

    def recording(self, *args, **kwargs):
        sampled.append(self)
        return generate(self, *args, **kwargs)

    type(model).generate = recording
    try:
        reward.rewards(["1 + 1 = 3.\n\nSo it is 3.\n\nThe answer is 3."], ["2"], ["g"], ["What is 1 + 1?"])
    finally:
        type(model).generate = generate
        reward.close()
    assert sampled and all(m is trainer.model for m in sampled)  # the policy being trained, the object itself
    assert reward.last["verdicts"][0].status == "ok"
