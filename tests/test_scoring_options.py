"""Issue-3 scoring options: reward maps, RTS variants, the no-error rule, advantage estimators, per-source
statistics, and bad values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo_data.config import ScoreConfig, load_recipe
from sgpo_data.errors import SgpoError
from sgpo_data.scoring import group_advantages, score_stats, score_table
from tests.helpers import ALL_NEGATIVE, col, make_table, sig


def test_step_map_gives_the_same_credit_wherever_the_error_is():
    out = score_table(make_table(ALL_NEGATIVE), ScoreConfig(reward_map="step", step_credit=0.3))
    assert col(out, "reward") == pytest.approx([0.3] * 4)
    assert col(out, "advantage") == [0.0] * 4  # an ablation: no spread inside the group


def test_char_weighted_rts():
    table = make_table([("p", False, 3, 2, "ok")])
    table = table.set_column(table.schema.get_field_index("steps"), "steps",
                             pa.array([["aaaa", "bb", "cccccc"]], pa.list_(pa.string())))
    out = score_table(table, ScoreConfig(rts="chars"))
    assert col(out, "rts") == pytest.approx([6 / 12])
    assert col(score_table(table, ScoreConfig(rts="steps")), "rts") == pytest.approx([2 / 3])


def test_token_weighted_rts_uses_the_tokenizer():
    def tokenizer(texts, add_special_tokens=False):  # one token per word
        return {"input_ids": [t.split() for t in texts]}

    table = make_table([("p", False, 2, 1, "ok")])
    table = table.set_column(table.schema.get_field_index("steps"), "steps",
                             pa.array([["one two three", "four"]], pa.list_(pa.string())))
    assert col(score_table(table, ScoreConfig(rts="tokens"), tokenizer), "rts") == pytest.approx([0.75])
    with pytest.raises(SgpoError, match="needs a tokenizer"):
        score_table(table, ScoreConfig(rts="tokens"))


def test_token_weighted_rts_with_the_real_tokenizer(smollm2):
    table = make_table([("p", False, 2, 1, "ok")])
    table = table.set_column(table.schema.get_field_index("steps"), "steps",
                             pa.array([["Tom has 3 apples.\n\n", "3 + 4 = 8"]], pa.list_(pa.string())))
    rts = col(score_table(table, ScoreConfig(rts="tokens"), smollm2.tokenizer), "rts")[0]
    n0 = len(smollm2.tokenizer("Tom has 3 apples.\n\n", add_special_tokens=False).input_ids)
    n1 = len(smollm2.tokenizer("3 + 4 = 8", add_special_tokens=False).input_ids)
    assert rts == pytest.approx(n0 / (n0 + n1))


@pytest.mark.parametrize(("rule", "rts", "credited"), [("last_step", 0.75, True), ("all_steps", 1.0, True),
                                                       ("no_credit", None, False)])
def test_no_error_rule(rule, rts, credited):
    out = score_table(make_table([("p", False, 4, -1, "ok"), ("p", False, 4, 0, "ok")]), ScoreConfig(no_error_rule=rule))
    assert col(out, "rts")[0] == (pytest.approx(rts) if rts is not None else None)
    assert col(out, "reward")[0] == (pytest.approx(sig(rts)) if credited else 0.0)
    assert 0 < col(out, "reward")[0] < 1 or not credited


def test_advantage_estimators():
    r = np.array([1.0, 0.0, 0.0, 0.5, 0.5, 0.2])
    g = np.array([0, 0, 0, 1, 1, 2])
    assert group_advantages(r, g, scale="rloo").tolist() == pytest.approx([1.0, -0.5, -0.5, 0.0, 0.0, 0.0])
    loo = [r[0] - r[[1, 2]].mean(), r[1] - r[[0, 2]].mean(), r[2] - r[[0, 1]].mean()]
    assert group_advantages(r, g, scale="rloo")[:3].tolist() == pytest.approx(loo)
    assert group_advantages(r, g, scale="none")[:3].tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3])
    out = score_table(make_table(ALL_NEGATIVE), ScoreConfig(advantage="none"))
    rewards = np.array(col(out, "reward"))
    assert col(out, "advantage") == pytest.approx((rewards - rewards.mean()).tolist(), abs=1e-6)


def test_std_floor_keeps_near_equal_rewards_from_blowing_up():
    r = np.array([0.5, 0.5 + 1e-6, 0.5 - 1e-6, 0.5])
    g = np.zeros(4)
    loose = group_advantages(r, g, eps=1e-9)
    floored = group_advantages(r, g, eps=1e-9, std_floor=1e-3)
    assert np.abs(loose).max() > 0.5  # float noise amplified into full-size advantages
    assert np.abs(floored).max() < 2e-3
    # binary outcome rewards never reach the floor: TRL's formula is kept exactly
    b = np.array([1.0, 0.0, 0.0, 0.0])
    assert group_advantages(b, g, std_floor=1e-3).tolist() == group_advantages(b, g).tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-1, 5), min_size=2, max_size=8), st.sampled_from(["steps", "chars"]),
       st.sampled_from(["group", "batch", "none", "rloo"]))
def test_advantages_sum_to_zero_for_every_estimator_but_batch_scaled_too(firsts, rts, estimator):
    rows = [("p", False, 6, k, "ok") for k in firsts]
    out = score_table(make_table(rows), ScoreConfig(rts=rts, advantage=estimator))
    assert abs(sum(col(out, "advantage"))) < 1e-3
    rewards = col(out, "reward")
    assert all(0 < x < 1 for x in rewards)
    if len(set(rewards)) == 1:
        assert col(out, "advantage") == [0.0] * len(rows)


def test_per_source_statistics():
    table = make_table(ALL_NEGATIVE + [("q", True, 2, None, "skipped_correct"), ("q", False, 2, 0, "ok")])
    table = table.append_column("data_source", pa.array(["gsm8k"] * 4 + ["math500"] * 2))
    stats = score_stats(score_table(table, ScoreConfig()))
    assert stats["by_source"]["gsm8k"]["all_negative_groups"] == 1
    assert stats["by_source"]["gsm8k"]["zero_std_groups_grpo"] == 1.0
    assert stats["by_source"]["gsm8k"]["zero_std_groups_sgpo"] == 0.0
    assert stats["by_source"]["math500"]["accuracy"] == 0.5


@pytest.mark.parametrize(
    ("override", "key"),
    [("score.beta=-1", "score.beta"), ("score.gamma=1.5", "score.gamma"), ("score.gamma=-0.1", "score.gamma"),
     ("score.alpha=1.0", "score.alpha"), ("score.step_credit=1", "score.step_credit"),
     ("score.advantage=ppo", "score.advantage"), ("score.rts=words", "score.rts"), ("score.beta=.nan", "score.beta")],
)
def test_bad_values_name_the_key_and_value(override, key):
    with pytest.raises(SgpoError, match=f"invalid recipe key '{key}'"):
        load_recipe(None, [override])


def test_non_finite_rewards_are_rejected(monkeypatch):
    from sgpo_data.scoring.rewards import REWARD_MAPS

    monkeypatch.setitem(REWARD_MAPS._factories, "sigmoid", lambda cfg: lambda rts: np.full_like(rts, np.inf))
    with pytest.raises(SgpoError, match="column reward is not finite"):
        score_table(make_table(ALL_NEGATIVE), ScoreConfig())
