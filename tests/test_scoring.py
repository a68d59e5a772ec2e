"""Scoring: hand-computed SGPO rewards and advantages, and properties checked against TRL's formula."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo_data.config import ScoreConfig
from sgpo_data.errors import SgpoError
from sgpo_data.schema import SCORE_FIELDS
from sgpo_data.scoring import REWARD_MAPS, group_advantages, score_stats, score_table
from tests.helpers import ALL_NEGATIVE, col, make_table, sig


def test_all_negative_group_hand_computed():
    out = score_table(make_table(ALL_NEGATIVE), ScoreConfig())
    assert out.schema.field("rts").type == pa.float32()
    assert col(out, "rts") == pytest.approx([0.0, 0.25, 0.5, 0.75])
    expected = [sig(x) for x in (0.0, 0.25, 0.5, 0.75)]
    assert col(out, "reward") == pytest.approx(expected, rel=1e-6)
    assert col(out, "reward") == pytest.approx([0.07585818, 0.22270014, 0.5, 0.77729986], abs=1e-6)
    assert col(out, "reward_outcome") == [0.0] * 4
    assert col(out, "group_all_negative") == [True] * 4
    r = np.array(expected)
    trl = (r - r.mean()) / (r.std(ddof=1) + 1e-4)
    assert col(out, "advantage") == pytest.approx(trl.tolist(), abs=1e-5)
    assert all(a != 0 for a in col(out, "advantage"))
    assert col(out, "advantage_grpo") == [0.0] * 4  # GRPO learns nothing here; SGPO does
    assert sum(col(out, "advantage")) == pytest.approx(0.0, abs=1e-5)


def test_mixed_group_correct_is_exactly_one_and_advantages_sum_to_zero():
    rows = [("a", True, 3, None, "skipped_correct"), ("a", False, 3, 1, "ok"), ("a", None, 2, None, None),
            ("b", True, 2, None, "skipped_correct"), ("b", True, 5, None, "skipped_correct")]
    out = score_table(make_table(rows), ScoreConfig())
    reward = col(out, "reward")
    assert reward[0] == 1.0 and reward[3] == 1.0 and reward[4] == 1.0
    assert reward[1] == pytest.approx(sig(1 / 3), rel=1e-6)
    assert reward[2] == 0.0 and col(out, "reward_outcome")[2] == 0.0  # ungradable counts as wrong
    assert col(out, "rts") == [None, pytest.approx(1 / 3), None, None, None]
    assert col(out, "group_all_negative") == [False] * 5
    adv = np.array(col(out, "advantage"))
    assert adv[:3].sum() == pytest.approx(0.0, abs=1e-5)
    assert adv[3:].tolist() == [0.0, 0.0]  # identical rewards: no signal
    assert col(out, "advantage_grpo")[3:] == [0.0, 0.0]


def test_bad_judge_rows_get_the_outcome_reward():
    rows = [("p", False, 3, None, "parse_error"), ("p", False, 3, None, "error"), ("p", False, 3, 0, "error"),
            ("p", False, 3, None, None), ("p", False, 3, 2, "ok")]
    out = score_table(make_table(rows), ScoreConfig())
    assert col(out, "reward")[:4] == [0.0] * 4
    assert col(out, "rts")[:4] == [None] * 4
    assert col(out, "reward")[4] == pytest.approx(sig(2 / 3), rel=1e-6)
    stats = score_stats(out)
    assert stats["judge_parse_errors"] == 1 and stats["judged"] == 1


def test_scope_all_negative_groups_credits_only_those_groups():
    rows = [("mixed", True, 2, None, "skipped_correct"), ("mixed", False, 4, 2, "ok"), *ALL_NEGATIVE]
    out = score_table(make_table(rows), ScoreConfig(scope="all_negative_groups"))
    assert col(out, "reward")[:2] == [1.0, 0.0]
    assert col(out, "rts")[1] == pytest.approx(0.5)  # still recorded, just not credited
    assert col(out, "reward")[2:] == pytest.approx([sig(x) for x in (0, .25, .5, .75)], rel=1e-6)
    default = score_table(make_table(rows), ScoreConfig())
    assert col(default, "reward")[1] == pytest.approx(0.5)


def test_linear_map_and_unknown_map():
    out = score_table(make_table(ALL_NEGATIVE), ScoreConfig(reward_map="linear", alpha=0.8))
    assert col(out, "reward") == pytest.approx([0.0, 0.2, 0.4, 0.6])  # rts 0 -> 0 is the documented exception
    with pytest.raises(SgpoError, match="valid names: linear, sigmoid"):
        REWARD_MAPS.get("cosine", cfg=ScoreConfig())


def test_nan_guard_names_column_and_row(monkeypatch):
    monkeypatch.setitem(REWARD_MAPS._factories, "sigmoid", lambda cfg: lambda rts: rts * np.nan)
    with pytest.raises(SgpoError, match=r"column reward is not finite .* prompt_id='p' sample_idx=0"):
        score_table(make_table(ALL_NEGATIVE), ScoreConfig())


def test_first_error_outside_the_steps_is_rejected():
    rows = [("p", False, 3, 0, "ok"), ("q", False, 3, 3, "ok")]
    with pytest.raises(SgpoError, match=r"first_error_step 3 is outside -1..2 .* prompt_id='q' sample_idx=0"):
        score_table(make_table(rows), ScoreConfig())
    with pytest.raises(SgpoError, match=r"\(the response has 0 steps\)"):
        score_table(make_table([("p", False, 0, -1, "ok")]), ScoreConfig())


def test_group_of_one_and_missing_columns():
    out = score_table(make_table([("solo", False, 4, 1, "ok")]), ScoreConfig())
    assert col(out, "advantage") == [0.0] and col(out, "advantage_grpo") == [0.0]
    assert group_advantages(np.array([0.3]), np.array(["g"])).tolist() == [0.0]
    with pytest.raises(SgpoError, match="missing column"):
        score_table(make_table(ALL_NEGATIVE).drop_columns(["steps"]), ScoreConfig())


def test_rescoring_replaces_columns_and_keeps_schema():
    once = score_table(make_table(ALL_NEGATIVE), ScoreConfig())
    twice = score_table(once, ScoreConfig(reward_map="linear"))
    assert twice.schema.names[-len(SCORE_FIELDS):] == [f.name for f in SCORE_FIELDS]
    assert [twice.schema.field(f.name).type for f in SCORE_FIELDS] == [f.type for f in SCORE_FIELDS]
    assert twice.num_columns == once.num_columns


def test_score_stats_hand_computed():
    rows = [("a", True, 2, None, "skipped_correct"), ("a", False, 4, 1, "ok"),
            ("b", None, 2, None, "parse_error"), ("b", False, 2, None, "parse_error"), ("c", False, 4, 0, "ok")]
    stats = score_stats(score_table(make_table(rows), ScoreConfig()))
    distributions = stats.pop("distributions")
    assert stats == {
        "prompts": 3, "responses": 5, "graded": 4, "accuracy": 0.25, "accuracy_all": 0.2,
        "all_negative_groups": 2, "zero_std_groups_grpo": pytest.approx(2 / 3),
        "zero_std_groups_sgpo": pytest.approx(2 / 3), "judged": 2, "judge_parse_errors": 2, "judge_errors": 0,
        "judge_failed_outcome_reward": 2, "no_error_found": 0,
        "mean_reward": pytest.approx((1 + sig(.25) + sig(0)) / 5, rel=1e-6), "mean_rts": pytest.approx(0.125),
    }
    assert all(isinstance(v, (int, float)) for v in stats.values())
    assert distributions["rts"]["counts"] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # rts 0 and 0.25
    assert distributions["first_error_relative"]["n"] == 2
    assert distributions["reward"]["n"] == 5 and sum(distributions["reward"]["counts"]) == 5


def test_group_advantages_options():
    r, g = np.array([1.0, 0.0, 0.5, 0.5]), np.array([0, 0, 1, 1])
    assert group_advantages(r, g, scale="none").tolist() == [0.5, -0.5, 0.0, 0.0]
    assert group_advantages(r, g, scale="batch") == pytest.approx([0.5 / (np.std(r, ddof=1) + 1e-4), -0.5 / (np.std(r, ddof=1) + 1e-4), 0, 0])
    with pytest.raises(SgpoError, match="valid names: group, batch, none"):
        group_advantages(r, g, scale="global")


# ---- properties -------------------------------------------------------------------------------------

betas = st.floats(1e-3, 1e3)
gammas = st.floats(0.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(num_steps=st.integers(1, 40), beta=betas, gamma=gammas)
def test_sigmoid_reward_strictly_inside_unit_and_monotone_in_first_error(num_steps, beta, gamma):
    firsts = [*range(num_steps), -1]  # -1: no error found, so the final step is wrong (k = K-1)
    rows = [("p", False, num_steps, k, "ok") for k in firsts] + [("p", True, num_steps, None, "skipped_correct")]
    out = score_table(make_table(rows), ScoreConfig(beta=beta, gamma=gamma))
    reward = np.array(col(out, "reward"), dtype=np.float32)
    assert reward[-1] == 1.0
    wrong = reward[:-1]
    assert np.all((wrong > 0) & (wrong < 1))
    assert np.all(np.diff(wrong) >= 0)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=1, max_size=8), seed=st.integers(0, 2**31))
def test_advantages_sum_to_zero_per_group_in_any_row_order(sizes, seed):
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.full(size, f"g{i}") for i, size in enumerate(sizes)])
    rewards = rng.choice([0.0, 1.0, rng.random()], size=len(ids))
    order = rng.permutation(len(ids))
    adv = group_advantages(rewards[order], ids[order])
    for gid in np.unique(ids):
        assert abs(adv[ids[order] == gid].astype(np.float64).sum()) < 1e-4
    unshuffled = group_advantages(rewards, ids)
    assert np.allclose(adv, unshuffled[order], atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(size=st.integers(2, 8), ngroups=st.integers(1, 6), seed=st.integers(0, 2**31))
def test_advantage_grpo_matches_trl_formula(size, ngroups, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    correct = rng.random(size * ngroups) < rng.random()
    num_steps = rng.integers(1, 6, size=size * ngroups)
    rows = [(f"p{i // size}", bool(c), int(k), int(rng.integers(-1, k)), "ok") for i, (c, k) in enumerate(zip(correct, num_steps))]
    out = score_table(make_table(rows), ScoreConfig())

    def trl(rewards: np.ndarray) -> np.ndarray:
        r = torch.tensor(rewards, dtype=torch.float32)
        mean = r.view(-1, size).mean(1).repeat_interleave(size)
        std = r.view(-1, size).std(1).repeat_interleave(size)
        return ((r - mean) / (std + 1e-4)).numpy()

    assert np.allclose(col(out, "advantage_grpo"), trl(np.array(col(out, "reward_outcome"))), atol=1e-4)
    rewards = np.array(col(out, "reward"))
    assert np.allclose(col(out, "advantage"), trl(rewards), atol=2e-3, rtol=1e-4)
    assert np.allclose(group_advantages(rewards, np.repeat(np.arange(ngroups), size)), trl(rewards), atol=2e-3, rtol=1e-4)
