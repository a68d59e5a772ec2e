"""The SGPO reward with verl's custom-reward signatures: called directly, and inside verl 0.9.1 (its dataset, its
reward-function loader and its reward manager) over the `verl` view."""

import asyncio

import pytest

from sgpo_data.integrations.verl import compute_score, compute_score_batch
from tests.helpers import arithmetic_view


def score(*args, **kwargs) -> float:
    return asyncio.run(compute_score(*args, **kwargs))["score"]


def test_compute_score_gives_one_sgpo_reward_and_the_batch_variant_groups_by_prompt_id():
    info = {"problem": "Bo has 10 cards and gives away 4. How many cards?", "reference_solution": "10 - 4 = 6.",
            "prompt_id": "bo"}
    right = score("arithmetic", "10 - 4 = 6.\n\nThe answer is 6.", "6", info, judge="arith")
    early = score("arithmetic", "10 - 4 = 5.\n\nThe answer is 5.", "6", info, judge="arith")
    late = score("arithmetic", "10 - 4 = 6.\n\nSo 7 are left.\n\nThe answer is 7.", "6", info, judge="arith")
    assert right == 1.0 and 0 < early < late < 1
    batch = compute_score_batch(["arithmetic"] * 3, ["10 - 4 = 5.\n\nThe answer is 5.",
                                                     "10 - 4 = 6.\n\nSo 7 are left.\n\nThe answer is 7.",
                                                     "10 - 4 = 6.\n\nThe answer is 6."],
                                ["6", "6", "6"], [info, info, info], judge={"name": "arith", "scope": "all_negative_groups"})
    assert batch[2] == 1.0 and batch[:2] == [0.0, 0.0]  # the group has a right answer: no partial credit in scope
    assert compute_score_batch(["arithmetic"] * 2, ["10 - 4 = 5.\n\nThe answer is 5.",
                                                    "10 - 4 = 6.\n\nSo 7 are left.\n\nThe answer is 7."],
                               ["6", "6"], [info, info], judge="arith") == [early, late]


@pytest.mark.slow  # verl forks processes; the shipped tokenizer may need the model converted
def test_verl_reads_the_verl_view_and_scores_it_with_compute_score_through_its_reward_manager(tmp_path):
    """verl 0.9.1 itself (installed without its training stack by `make test`): RLHFDataset + collate_fn over the
    view, the reward function loaded from its file by verl's loader, and verl's naive reward manager calling it."""
    pytest.importorskip("verl", reason="`make test` installs verl 0.9.1 without its heavy dependencies")
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    import sgpo_data.integrations.verl as integration
    from sgpo_data.backends.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None)[0])
    dataset = RLHFDataset(arithmetic_view("verl", tmp_path), tokenizer, OmegaConf.create(
        {"prompt_key": "prompt", "max_prompt_length": 512, "cache_dir": str(tmp_path / "cache")}))
    assert len(dataset) == 4  # one row per prompt, none filtered as too long
    batch = collate_fn([dataset[i] for i in range(len(dataset))])
    problems = [info["problem"] for info in batch["extra_info"]]
    assert all(p in chat[-1]["content"] for p, chat in zip(problems, batch["raw_prompt"]))
    assert list(batch["data_source"]) == ["arithmetic"] * 4

    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": integration.__file__, "name": "compute_score", "reward_kwargs": {"judge": "arith"}}}})
    reward_fn = get_custom_reward_fn(config)
    manager = NaiveRewardManager(config, tokenizer, reward_fn)

    def score(i: int, response: str) -> float:
        ids = tokenizer(response, add_special_tokens=False).input_ids
        item = DataProto.from_dict(
            tensors={"responses": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)},
            non_tensors={k: np.array([batch[k][i]], dtype=object) for k in ("data_source", "reward_model", "extra_info")})
        return manager.loop.run_until_complete(manager.run_single(item))["reward_score"]

    truth = batch["reward_model"][0]["ground_truth"]
    solution = batch["extra_info"][0]["reference_solution"]
    first, *rest = solution.split("\n\n")
    wrong_first = first.replace(" = ", " = 1") + "\n\n" + "\n\n".join(rest[:-1]) + f"\n\nThe answer is {truth}1."
    wrong_last = "\n\n".join([first, *rest[:-1]]) + f"\n\nThe answer is {int(truth) + 1}."
    right, early, late = score(0, solution), score(0, wrong_first), score(0, wrong_last)
    assert right == 1.0 and 0.0 < early < late < 1.0  # partial credit grows with how far the reasoning got
