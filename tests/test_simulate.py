"""The two-step GRPO/SGPO simulation: exact gradient vs brute force, the all-negative effect, outputs, bad input."""

from __future__ import annotations

import csv
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo_data.errors import SgpoError
from sgpo_data.simulate import (
    CSV_COLUMNS,
    class_advantages,
    class_probs,
    class_rewards,
    class_scores,
    count_probs,
    count_vectors,
    exact_trajectory,
    expected_gradient,
    format_summary,
    gradient_weights,
    iterations_to_target,
    run_simulation,
)

DEFAULTS = {k: v.default for k, v in inspect.signature(run_simulation).parameters.items()}


def brute_force_gradient(theta, group_size, rewards, n_groups, seed):
    """Sample every step of every response, score it with the full log-likelihood gradient (step 2 is
    generated even after a wrong step 1) and apply TRL's advantage per response. Returns mean and std error."""
    rng = np.random.default_rng(seed)
    p1, p2 = 1 / (1 + np.exp(-theta))
    x1 = rng.random((n_groups, group_size)) < p1
    x2 = rng.random((n_groups, group_size)) < p2
    cls = np.where(~x1, 0, np.where(~x2, 1, 2))
    r = rewards[cls]
    std = r.std(axis=1, ddof=1, keepdims=True)
    adv = np.where(std == 0, 0.0, (r - r.mean(axis=1, keepdims=True)) / (std + 1e-4))
    score = np.stack([x1 - p1, x2 - p2], axis=-1)
    per_group = (adv[..., None] * score).mean(axis=1)
    return per_group.mean(axis=0), per_group.std(axis=0) / np.sqrt(n_groups)


@pytest.mark.parametrize("method", ["grpo", "sgpo"])
def test_exact_gradient_matches_brute_force_monte_carlo(method):
    theta, g = np.array([-0.5, 0.3]), 4
    rewards = class_rewards(method)
    exact = expected_gradient(theta, g, rewards)
    mean, se = brute_force_gradient(theta, g, rewards, n_groups=400_000, seed=1)
    assert np.all(np.abs(exact - mean) < 5 * se + 1e-4), (exact, mean, se)
    assert np.all(np.abs(exact) > 10 * se)  # the comparison has teeth: the gradient is far from 0


def test_all_negative_groups_give_grpo_nothing_and_sgpo_a_push_on_step_one():
    theta, g = np.array([-2.0, -2.0]), 4
    for method, expect_zero in (("grpo", True), ("sgpo", False)):
        counts, weights = gradient_weights(g, class_rewards(method))
        neg = counts[:, 2] == 0
        contribution = count_probs(counts[neg], class_probs(theta)) @ weights[neg] @ class_scores(theta)
        if expect_zero:
            assert np.all(weights[neg] == 0.0) and np.all(contribution == 0.0)
        else:
            assert contribution[0] > 1e-3  # ranks W2 above W1, so step 1 gets better


@settings(max_examples=50, deadline=None)
@given(st.floats(-40, 40), st.floats(-40, 40), st.integers(2, 20))
def test_count_vector_probabilities_sum_to_one(t1, t2, g):
    counts = count_vectors(g)
    assert len(counts) == (g + 1) * (g + 2) // 2 and np.all(counts.sum(axis=1) == g)
    assert count_probs(counts, class_probs(np.array([t1, t2]))).sum() == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=3, max_size=3).filter(lambda n: sum(n) >= 2),
       st.sampled_from(["grpo", "sgpo"]))
def test_class_advantages_sum_to_zero_and_vanish_for_single_class_groups(n, method):
    counts = np.array(n)
    adv = class_advantages(counts, class_rewards(method))
    assert (counts * adv).sum() == pytest.approx(0.0, abs=1e-9)
    if counts.max() == counts.sum():
        assert np.all(adv == 0.0)


@pytest.mark.parametrize("method", ["grpo", "sgpo"])
@pytest.mark.parametrize("s0", [0.01, 0.2, 0.6])
def test_success_rises_monotonically_under_exact_dynamics(method, s0):
    success = exact_trajectory(s0, 4, class_rewards(method), iterations=200, lr=0.05)
    assert np.all(np.diff(success) > 0)
    assert success[0] == pytest.approx(s0)


def _iterations(s0, g):
    its = {}
    for m in ("grpo", "sgpo"):
        success = exact_trajectory(s0, g, class_rewards(m), DEFAULTS["iterations"], DEFAULTS["lr"])
        its[m] = iterations_to_target(success, DEFAULTS["target"])
    return its


def test_sgpo_is_clearly_faster_where_all_negative_groups_are_common():
    its = _iterations(0.01, 4)
    assert its["grpo"] is not None and its["sgpo"] is not None
    assert its["grpo"] / its["sgpo"] > 1.5  # measured 2.02 with the defaults


def test_speedup_vanishes_where_all_negative_groups_are_rare():
    its = _iterations(0.5, 16)
    assert its["grpo"] / its["sgpo"] == pytest.approx(1.0, abs=0.2)  # measured 1.00


def test_small_run_writes_csv_png_and_summary(tmp_path):
    rows = run_simulation(tmp_path, init_success=(0.05, 0.5), group_sizes=(2, 4), iterations=10,
                          mc_groups=2, mc_seeds=3, target=0.6)
    with (tmp_path / "dynamics.csv").open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0].keys()) == CSV_COLUMNS
    assert len(table) == 2 * 2 * 2 * 11
    assert {r["method"] for r in table} == {"grpo", "sgpo"}
    first = next(r for r in table if r["method"] == "sgpo" and r["group_size"] == "4" and r["iteration"] == "0")
    assert float(first["success_exact"]) == pytest.approx(0.05, rel=1e-5)
    assert float(first["success_mc_mean"]) == pytest.approx(0.05, rel=1e-5)
    assert float(first["all_negative_exact"]) == pytest.approx(0.95**4, rel=1e-5)
    png = (tmp_path / "dynamics.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert [(r["init_success"], r["group_size"]) for r in rows] == [(0.05, 2), (0.05, 4), (0.5, 2), (0.5, 4)]
    assert rows[-1]["all_negative_initial"] == pytest.approx(0.5**4)
    assert "speed-up" in format_summary(rows)


def test_speedup_lower_bound_is_reported_when_grpo_misses_the_target(tmp_path):
    # With the default lr GRPO needs ~240 iterations from s0 = 0.01 at G = 4 and SGPO ~120.
    rows = run_simulation(tmp_path, init_success=(0.01,), group_sizes=(4,), iterations=150, mc_groups=1, mc_seeds=1)
    (row,) = rows
    assert row["grpo_iterations"] is None and row["sgpo_iterations"] is not None
    assert row["speedup"] is None
    assert row["speedup_lower_bound"] == pytest.approx(150 / row["sgpo_iterations"])
    assert f">={row['speedup_lower_bound']:.2f}" in format_summary(rows)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"init_success": (0.0,)}, "init_success"),
        ({"init_success": (0.2, 1.0)}, "init_success"),
        ({"group_sizes": (1,)}, "group_sizes"),
        ({"iterations": 0}, "iterations"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"target": 1.0}, "target"),
        ({"mc_groups": 0}, "mc_groups"),
        ({"mc_seeds": 0}, "mc_seeds"),
        ({"reward_map": lambda rts: np.array([np.nan, 0.5])}, "reward_map"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(tmp_path, kwargs, name):
    with pytest.raises(SgpoError, match=name):
        run_simulation(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_simulate_prints_the_speedup_table(tmp_path):
    from typer.testing import CliRunner

    from sgpo_data_cli.app import app

    args = ["simulate", "--out", str(tmp_path), "--init-success", "0.01", "--init-success", "0.5",
            "--group-size", "4", "--iterations", "300"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "speed-up" in result.output and (tmp_path / "dynamics.png").is_file()
    lines = [line.split() for line in result.output.splitlines() if line.strip().startswith(("0.01", "0.5"))]
    speedups = {row[0]: float(row[-1]) for row in lines}
    assert speedups["0.01"] > 1.5 and abs(speedups["0.5"] - 1.0) < 0.2
    bad = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path), "--set", "score.beta=-1"])
    assert bad.exit_code == 2 and "score.beta" in bad.output
