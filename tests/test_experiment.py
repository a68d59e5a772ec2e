"""`sgpo-data experiment`: a tiny run end to end (outputs and their structure), the mechanism the arms rest on
(GRPO and SGPO advantages part only in all-negative groups; the noisy judge moves first errors at about rate p),
divergence, and bad input. The tests that build or train the tiny transformer are slow; the others grade with the
task's in-process check, so no process starts."""

from __future__ import annotations

import csv
import json
import multiprocessing
import random

import numpy as np
import pytest
import torch

from sgpo_data.errors import SgpoError
from sgpo_data.experiment import run_experiment
from sgpo_data.experiment.presets import resolve
from sgpo_data.experiment.rewards import ArmReward
from sgpo_data.experiment.task import ChainTask
from sgpo_data.scoring.advantages import group_advantages

TINY = {
    "workers": 1, "grader": "exact", "seeds": 1,
    "model": {"d_model": 16, "layers": 1, "heads": 2},
    "warmup": {"max_steps": 4, "check_every": 2, "slip_steps": 2, "batch": 8},
    "rl": {"steps": 3, "eval_every": 1, "eval_problems": 8, "prompts": 2, "group_size": 4},
    "settings": {"main": {"arms": ["grpo", "sgpo", "noisy_0.5"]}, "control": {"arms": ["grpo"]}},
}


@pytest.mark.slow  # trains a tiny transformer
def test_tiny_run_writes_curves_and_metrics(tmp_path):
    metrics = run_experiment(tmp_path, overrides=TINY)
    assert multiprocessing.active_children() == []  # no worker, no grader process
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["settings"].keys() == metrics["settings"].keys() == {"main", "control"}
    main = on_disk["settings"]["main"]
    assert set(main["arms"]) == {"grpo", "sgpo", "noisy_0.5"}
    sgpo = main["arms"]["sgpo"]
    for key in ("greedy_initial", "greedy_final", "sampled_final", "greedy_mean", "greedy_steps_censored",
                "sampled_progress_final", "zero_std", "same_step"):
        assert set(sgpo[key]) == {"mean", "low", "high", "n"}
    assert "greedy_final" in sgpo["vs_grpo"] and "vs_grpo" not in main["arms"]["grpo"]
    assert {"grpo_iterations", "sgpo_iterations", "speedup"} <= set(main["simulate"])
    assert main["warmup"]["0"]["step"] == 6  # 4 right-chain steps, then 2 of the weak solver's
    rows = list(csv.DictReader((tmp_path / "curves.csv").open()))
    assert len(rows) == 4 * 4  # 4 runs x evaluations at steps 0..3
    assert {r["step"] for r in rows} == {"0", "1", "2", "3"}
    assert (tmp_path / "curves.png").stat().st_size > 0
    # every arm of a seed starts from the same warmed-up policy
    first = {(r["setting"], r["arm"]): r["greedy_acc"] for r in rows if r["step"] == "0"}
    assert len({v for (s, _), v in first.items() if s == "main"}) == 1


@pytest.mark.slow  # trains a tiny transformer
def test_gpu_preset_dry_run_on_cpu(tmp_path):
    tiny = {**TINY, "model": {}, "device": "cpu", "rl": {**TINY["rl"], "steps": 1},
            "settings": {"main": {"arms": ["sgpo"]}, "control": {"arms": ["grpo"]}}}
    metrics = run_experiment(tmp_path, preset="gpu", overrides=tiny)
    assert metrics["config"]["model"]["d_model"] == 128 and metrics["device"] == "cpu"


def _chains(n: int, k: int, seed: int = 0):
    task = ChainTask(100, "+", k, k)
    return [task.problem(random.Random(seed * 1000 + i)) for i in range(n)]


def _wrong_at(problem, step: int) -> str:
    """The solution with a slip of +1 at `step`, carried on to the answer (the lines after it follow from it)."""
    lines = problem.solution.split("\n")
    return "\n".join(line if j < step else f"{(int(line) + 1) % 100:02d}" for j, line in enumerate(lines))


def test_grpo_and_sgpo_advantages_differ_only_where_no_answer_is_right():
    cfg = resolve(overrides={"grader": "exact"})
    (mixed, negative) = _chains(2, 6)
    texts = [mixed.solution, _wrong_at(mixed, 0), _wrong_at(mixed, 3), _wrong_at(mixed, 5),
             _wrong_at(negative, 0), _wrong_at(negative, 2), _wrong_at(negative, 4), _wrong_at(negative, 4)]
    rows = [mixed] * 4 + [negative] * 4
    groups = np.repeat([0, 1], 4)
    score = cfg.score
    advantages = {}
    for arm in ("grpo", "sgpo", "step"):
        reward = ArmReward(arm, cfg, seed=0)
        graded = reward(texts, [p.answer for p in rows], [str(g) for g in groups], [p.text for p in rows],
                        [p.solution for p in rows])
        config = reward.exact.score_config
        advantages[arm] = group_advantages(graded.rewards, groups, config.eps, config.advantage, config.std_floor)
        reward.close()
        assert graded.first_errors.tolist() == [-2, 0, 3, 5, 0, 2, 4, 4]
    assert score["scope"] == "all_negative_groups"
    np.testing.assert_array_equal(advantages["grpo"][:4], advantages["sgpo"][:4])  # a right answer: the same
    assert np.all(advantages["grpo"][4:] == 0)  # all wrong: GRPO learns nothing here
    assert advantages["sgpo"][4] < 0 < advantages["sgpo"][6]  # SGPO: later first error, higher advantage
    # the same credit for every wrong response is no signal: group normalisation removes it
    np.testing.assert_array_equal(advantages["step"], advantages["grpo"])


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_noisy_judge_moves_first_errors_at_about_rate_p(p):
    cfg = resolve(overrides={"grader": "exact"})
    k, n = 8, 400
    problems = _chains(n, k, seed=1)
    rng = random.Random(2)
    texts = [_wrong_at(problem, rng.randrange(k)) for problem in problems]
    reward = ArmReward(f"noisy_{p:g}", cfg, seed=3)
    graded = reward([t for t in texts], [q.answer for q in problems], [str(i) for i in range(n)],
                    [q.text for q in problems], [q.solution for q in problems])
    noisy = np.array([v.first_error_step for v in reward.own.last["verdicts"]])
    reward.close()
    moved = float(np.mean(noisy != graded.first_errors))
    expected = p * (1 - 1 / k)  # a replacement is uniform over the K steps, so 1 time in K it lands in place
    assert abs(moved - expected) < 0.07, (moved, expected)


@pytest.mark.slow  # trains a tiny transformer
def test_nan_loss_is_reported_as_diverged_and_other_arms_run(tmp_path, monkeypatch):
    from sgpo_data.experiment import loop

    real_loss, real_run, arm_now = loop.policy_loss, loop.run_arm, {}

    def nan_for_sgpo(logp, batch, cfg, norm):
        loss, stats = real_loss(logp, batch, cfg, norm)
        return (loss * float("nan"), stats) if arm_now["arm"] == "sgpo" else (loss, stats)

    def tagged(lab, arm, seed, state, grader_seed=None):
        arm_now["arm"] = arm
        return real_run(lab, arm, seed, state, grader_seed)

    monkeypatch.setattr(loop, "policy_loss", nan_for_sgpo)
    monkeypatch.setattr(loop, "run_arm", tagged)
    # every response gets an advantage, so every step computes a loss
    monkeypatch.setattr(loop, "group_advantages", lambda rewards, *args: np.ones(len(rewards), dtype=np.float32))
    overrides = {**TINY, "settings": {"main": {"arms": ["grpo", "sgpo"]}, "control": {"arms": ["grpo"]}}}
    metrics = run_experiment(tmp_path, overrides=overrides)
    arms = metrics["settings"]["main"]["arms"]
    assert arms["sgpo"]["diverged"] == {0: 0} and not arms["grpo"]["diverged"]
    rows = [r for r in csv.DictReader((tmp_path / "curves.csv").open()) if r["setting"] == "main"]
    assert [r["step"] for r in rows if r["arm"] == "sgpo"] == ["0"]  # its curve ends where it diverged
    assert [r["step"] for r in rows if r["arm"] == "grpo"] == ["0", "1", "2", "3"]  # the other arm ran on


@pytest.mark.parametrize("overrides, names", [
    (["settings.main.arms=[grpo,bogus]"], ["settings.main.arms", "bogus"]),
    (["settings.main.arms=[noisy_1.5]"], ["settings.main.arms", "[0, 1]"]),
    (["settings.main.arms=[noisy_x]"], ["noisy_x"]),
    (["rl.bogus=1"], ["rl.bogus"]),
    (["rl.steps=0"], ["rl.steps"]),
    (["task.min_ops=9"], ["min_ops"]),
    (["rl.lr"], ["rl.lr"]),
])
def test_bad_input_is_one_line_naming_the_key(tmp_path, overrides, names):
    with pytest.raises(SgpoError) as err:
        run_experiment(tmp_path / "out", overrides=overrides)
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in names), message
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_unknown_preset_is_refused():
    with pytest.raises(SgpoError, match="unknown preset 'tpu'"):
        resolve("tpu")


@pytest.mark.slow
def test_tiny_run_with_the_math_verify_grader(tmp_path):
    overrides = {**TINY, "grader": "math_verify", "settings": {"main": {"arms": ["grpo", "sgpo"]}}}
    metrics = run_experiment(tmp_path, overrides=overrides)
    assert set(metrics["settings"]["main"]["arms"]) == {"grpo", "sgpo"}


@pytest.mark.slow  # builds the tiny transformer and samples from it
def test_policy_log_probs_match_the_trainer_s():
    """The behaviour log-probs kept at sampling are the ones the offline trainer's loss computes (ratio 1)."""
    from sgpo_data.experiment.loop import Lab
    from sgpo_data.train.data import Example
    from sgpo_data.train.trainer import collate, token_logprobs

    lab = Lab(resolve(overrides={"model": {"d_model": 16, "layers": 1, "heads": 2}, "rl": {"eval_problems": 4}}))
    model = lab.policy(0)
    prompts, _, ids, logps = lab.sample(model, _chains(3, 4), 2, 1.0, torch.Generator().manual_seed(0))
    batch = collate([Example(prompts[i].tolist(), ids[i], 1.0, logps[i]) for i in range(len(ids))], 0, "cpu")
    with torch.no_grad():
        logp, _ = token_logprobs(model, batch, 1.0)
    assert float(((logp - batch["old"]).abs() * batch["mask"]).max()) < 1e-4


def test_chain_judge_names_the_first_line_that_leaves_the_reference():
    from sgpo_data.judges import JudgeInput, get_judge

    judge = get_judge("chain")
    reference = "82\n94\n02"
    cases = [(["82\n", "95\n", "03"], 1), (["81\n", "94\n", "02"], 0), (["82\n", "94\n", "02\n", "10"], 3),
             (["82\n", "94"], -1), (["82\n", "94\n", "02"], -1)]
    for steps, first in cases:
        assert judge.decide(JudgeInput("37+45+12+08", reference, steps)).first_error_step == first
    assert judge.decide(JudgeInput("37+45", None, ["82"])).status == "parse_error"
