"""The SGPO reward inside TRL: `SGPOReward` as a GRPOTrainer reward function (async: TRL awaits it)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sgpo_data.integrations.trl import SGPOReward
from tests.helpers import arithmetic_view

PROMPT = [{"role": "user", "content": "Ann has 3 pens and buys 4 more, then doubles them. How many pens?"}]
OTHER = [{"role": "user", "content": "Bo has 10 cards and gives away 4. How many cards?"}]


def completion(text):
    return [{"role": "assistant", "content": text}]


def test_an_all_negative_group_gets_a_reward_spread_from_the_first_errors():
    reward = SGPOReward(judge="arith")
    completions = [completion(t) for t in [
        "3 + 4 = 8 pens.\n\n8 * 2 = 16.\n\nThe answer is 16.",          # wrong at step 0
        "3 + 4 = 7 pens.\n\n7 * 2 = 15.\n\nThe answer is 15.",          # wrong at step 1
        "3 + 4 = 7 pens.\n\n7 * 2 = 14.\n\nThe answer is 14.",          # right
        "10 - 4 = 5.\n\nThe answer is 5.",                               # wrong at step 0
        "10 - 4 = 6.\n\nSo she has 7 left.\n\nThe answer is 7.",       # wrong, no false equation: last step
    ]]
    logged = {}
    rewards = asyncio.run(reward([PROMPT, PROMPT, PROMPT, OTHER, OTHER], completions,
                                 solution=["14", "14", "14", "6", "6"],
                                 log_metric=lambda name, value: logged.setdefault(name, value)))
    assert rewards[2] == 1.0
    assert 0 < rewards[0] < rewards[1] < 1  # the later the first error, the more credit
    assert 0 < rewards[3] < rewards[4] < 1  # an all-negative group with a spread: GRPO would give it nothing
    assert [v and v.first_error_step for v in reward.last["verdicts"]] == [0, 1, None, 0, -1]
    assert logged == {"sgpo/all_negative_groups": 1.0, "sgpo/all_negative_groups_with_spread": 1.0,
                      "sgpo/judge_failures": 0.0}
    with pytest.raises(KeyError, match="no 'solution' column"):
        asyncio.run(reward([PROMPT], [completion("x")], answer=["1"]))
    reward.close()


@pytest.mark.slow
def test_two_grpo_steps_in_trl_with_the_sgpo_reward_and_with_a_0_1_reward(tmp_path):
    """TRL's GRPOTrainer on CPU with the shipped SmolLM2, fed the exported `prompts` view: with SGPO's reward,
    all-negative groups get a reward spread (reward std > 0); with the plain 0/1 reward they do not."""
    from datasets import load_dataset
    from trl import GRPOConfig, GRPOTrainer

    from sgpo_data.backends.models import resolve_model

    path = arithmetic_view("prompts", tmp_path, num_problems=4, min_steps=3, max_steps=4, seed=3)
    data = load_dataset("parquet", data_files=path, split="train", cache_dir=str(tmp_path / "cache"))
    assert {"prompt", "solution", "reference_solution", "problem"} <= set(data.column_names)
    sgpo = SGPOReward(judge="arith")
    seen, scored = [], None

    async def outcome_reward(prompts, completions, solution, **kwargs):
        return [float(c) for c in (await scored)["correct"]]  # the 0/1 reward of the same completions, by sgpo

    async def recording_sgpo(prompts, completions, **kwargs):
        nonlocal scored
        scored = asyncio.get_running_loop().create_future()
        rewards = await sgpo(prompts, completions, **kwargs)
        scored.set_result(sgpo.last)
        seen.append((list(prompts), rewards, list(sgpo.last["correct"])))
        return rewards

    recording_sgpo.__name__ = "sgpo"
    outcome_reward.__name__ = "outcome"
    config = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=4,
                        max_completion_length=48, learning_rate=1e-6, logging_steps=1, report_to="none",
                        use_cpu=True, bf16=False, save_strategy="no", seed=0, reward_weights=[1.0, 0.0])
    trainer = GRPOTrainer(model=resolve_model(None)[0], reward_funcs=[recording_sgpo, outcome_reward], args=config,
                          train_dataset=data)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "rewards/sgpo/mean" in entry]
    assert len(logs) == 2
    negative_spread = []
    for prompts, rewards, correct in seen:
        for start in range(0, len(prompts), 4):
            group = slice(start, start + 4)
            if not any(correct[group]):  # an all-negative group
                assert np.std([float(c) for c in correct[group]]) == 0.0  # the 0/1 reward: no signal
                negative_spread.append(np.std(rewards[group]))
    assert negative_spread and max(negative_spread) > 0  # SGPO: a spread, so a gradient
    assert all(np.isfinite(entry["loss"]) for entry in logs)
    sgpo.close()
