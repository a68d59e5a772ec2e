"""The SGPO reward with verl's custom-reward signatures (called directly; verl itself is not installed here)."""

import pytest

from sgpo_data.integrations.verl import compute_score, compute_score_batch

pytestmark = pytest.mark.slow  # math-verify grades in a worker process


def test_compute_score_gives_one_sgpo_reward_and_the_batch_variant_groups_by_prompt_id():
    info = {"problem": "Bo has 10 cards and gives away 4. How many cards?", "reference_solution": "10 - 4 = 6.",
            "prompt_id": "bo"}
    right = compute_score("arithmetic", "10 - 4 = 6.\n\nThe answer is 6.", "6", info, judge="arith")
    early = compute_score("arithmetic", "10 - 4 = 5.\n\nThe answer is 5.", "6", info, judge="arith")
    late = compute_score("arithmetic", "10 - 4 = 6.\n\nSo 7 are left.\n\nThe answer is 7.", "6", info, judge="arith")
    assert right == 1.0 and 0 < early < late < 1
    batch = compute_score_batch(["arithmetic"] * 3, ["10 - 4 = 5.\n\nThe answer is 5.",
                                                     "10 - 4 = 6.\n\nSo 7 are left.\n\nThe answer is 7.",
                                                     "10 - 4 = 6.\n\nThe answer is 6."],
                                ["6", "6", "6"], [info, info, info], judge={"name": "arith", "scope": "all_negative_groups"})
    assert batch[2] == 1.0 and batch[:2] == [0.0, 0.0]  # the group has a right answer: no partial credit in scope
    assert compute_score_batch(["arithmetic"] * 2, ["10 - 4 = 5.\n\nThe answer is 5.",
                                                    "10 - 4 = 6.\n\nSo 7 are left.\n\nThe answer is 7."],
                               ["6", "6"], [info, info], judge="arith") == [early, late]
