"""The experiment's report: `curves.csv` (every evaluation of every run), `metrics.json` (per setting and arm,
with bootstrap intervals over seeds and paired differences against GRPO), `curves.png`.

Per arm: initial and final accuracy (greedy and at temperature 1), the mean accuracy over training (the area
under the curve, the steadiest measure of speed), steps to target (the first evaluation at or above the seed's
initial accuracy plus `target_gain`; a seed that never gets there counts as the run length, and the count that
got there is given), the mean number of steps right before the first error (a rise of it with a fall of
accuracy would be reward hacking), the share of zero-std groups, of all-negative groups, and of all-negative
groups whose responses all fail at the same step (by the exact judge). Beside it, `simulate`'s prediction: the
paper's two-step model at the measured initial success (held-out, temperature 1) and G, iterations to that
success plus `target_gain`, GRPO over SGPO.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from sgpo_data.experiment.presets import ExperimentPreset

CURVE_COLUMNS = ("step", "greedy_acc", "sampled_acc", "greedy_progress", "sampled_progress", "train_success",
                 "zero_std", "all_negative", "same_step", "train_progress", "loss", "entropy", "step_s")
_RESAMPLES = 2000


def bootstrap(values, resamples: int = _RESAMPLES, seed: int = 0) -> dict:
    """Mean of `values` (NaNs left out) with a 95 % percentile bootstrap interval over them."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    means = np.random.default_rng(seed).choice(x, (resamples, x.size)).mean(1)
    return {"mean": float(x.mean()), "low": float(np.percentile(means, 2.5)),
            "high": float(np.percentile(means, 97.5)), "n": int(x.size)}


def _at(curve: list[dict], key: str) -> np.ndarray:
    return np.array([row[key] for row in curve], dtype=float)


def steps_to(curve: list[dict], key: str, target: float) -> int | None:
    for row in curve:
        if row[key] >= target - 1e-12:
            return int(row["step"])
    return None


def _run_summary(run: dict, cfg: ExperimentPreset, start: dict) -> dict:
    curve, total = run["curve"], cfg.rl.steps
    out = {"diverged_at": run["diverged_at"]}
    for kind in ("greedy", "sampled"):
        acc = _at(curve, f"{kind}_acc")
        hit = steps_to(curve, f"{kind}_acc", start[f"{kind}_acc"] + cfg.target_gain)
        out[f"{kind}_initial"], out[f"{kind}_final"] = float(acc[0]), float(acc[-1])
        out[f"{kind}_mean"] = float(np.trapezoid(acc, _at(curve, "step")) / max(curve[-1]["step"], 1)) \
            if len(curve) > 1 else float(acc[0])
        out[f"{kind}_steps_to_target"] = hit
        out[f"{kind}_steps_censored"] = total if hit is None else hit
        out[f"{kind}_progress_initial"] = curve[0][f"{kind}_progress"]
        out[f"{kind}_progress_final"] = curve[-1][f"{kind}_progress"]
    for key in ("zero_std", "all_negative", "same_step", "train_success"):
        values = _at(curve[1:], key)
        out[key] = float(np.nanmean(values)) if values.size and np.isfinite(values).any() else None
    return out


def _arm_summary(per_seed: dict[int, dict], grpo: dict[int, dict] | None) -> dict:
    keys = [k for k in next(iter(per_seed.values())) if k not in ("diverged_at",) and "steps_to_target" not in k]
    out = {"seeds": len(per_seed),
           "diverged": {seed: s["diverged_at"] for seed, s in per_seed.items() if s["diverged_at"] is not None}}
    for key in keys:
        out[key] = bootstrap([s[key] for s in per_seed.values()])
    for kind in ("greedy", "sampled"):
        out[f"{kind}_reached_target"] = sum(s[f"{kind}_steps_to_target"] is not None for s in per_seed.values())
    if grpo is not None:
        paired = [k for k in keys if k.endswith(("_final", "_mean", "_steps_censored"))]
        out["vs_grpo"] = {k: bootstrap([per_seed[seed][k] - grpo[seed][k] for seed in per_seed if seed in grpo])
                          for k in paired}
    return out


def simulate_prediction(init_success: float, group_size: int, gain: float, score: dict, iterations: int = 3000,
                        lr: float = 0.25) -> dict:
    """`simulate`'s two-step model: iterations from `init_success` to `init_success + gain`, GRPO and SGPO (its
    partial credit from the arms' reward map; the model credits every wrong response, whatever `score.scope`)."""
    from sgpo_data.config import ScoreConfig
    from sgpo_data.scoring.rewards import REWARD_MAPS
    from sgpo_data.simulate import class_rewards, exact_trajectory, iterations_to_target

    cfg = ScoreConfig(**score)
    reward_map = REWARD_MAPS.get(cfg.reward_map, cfg=cfg)
    s0 = min(max(init_success, 1e-3), 0.99)
    target = min(s0 + gain, 0.999)
    hits = {m: iterations_to_target(exact_trajectory(s0, group_size, class_rewards(m, reward_map), iterations, lr),
                                    target)
            for m in ("grpo", "sgpo")}
    ratio = hits["grpo"] / hits["sgpo"] if hits["grpo"] and hits["sgpo"] else None
    return {"init_success": s0, "target": target, "group_size": group_size, "lr": lr,
            "grpo_iterations": hits["grpo"], "sgpo_iterations": hits["sgpo"], "speedup": ratio}


def summarize(cfg: ExperimentPreset, warm: list[dict], runs: list[dict]) -> dict:
    settings = {}
    for name, setting in cfg.settings.items():
        mine = [r for r in runs if r["setting"] == name]
        per_arm = {arm: {r["seed"]: _run_summary(r, cfg, r["curve"][0]) for r in mine if r["arm"] == arm}
                   for arm in setting.arms}
        grpo = per_arm.get("grpo")
        arms = {arm: _arm_summary(per_seed, grpo if arm != "grpo" else None) for arm, per_seed in per_arm.items()}
        s0 = float(np.mean([r["curve"][0]["sampled_acc"] for r in mine]))
        measured = {}
        if grpo and "sgpo" in per_arm:
            for kind in ("greedy", "sampled"):
                g = np.mean([s[f"{kind}_steps_censored"] for s in grpo.values()])
                s = np.mean([s[f"{kind}_steps_censored"] for s in per_arm["sgpo"].values()])
                measured[kind] = float(g / s) if s else None
        settings[name] = {
            "slip": setting.slip,
            "warmup": {w["seed"]: w[name] for w in warm},
            "initial": {k: bootstrap([r["curve"][0][k] for r in mine if r["arm"] == setting.arms[0]])
                        for k in ("greedy_acc", "sampled_acc", "sampled_progress")},
            "simulate": simulate_prediction(s0, cfg.rl.group_size, cfg.target_gain, cfg.score),
            "measured_speedup_sgpo": measured,
            "arms": arms,
        }
    return settings


def write_curves(path: Path, runs: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("setting", "arm", "seed", *CURVE_COLUMNS))
        for r in runs:
            for row in r["curve"]:
                writer.writerow((r["setting"], r["arm"], r["seed"],
                                 *("" if row[k] is None or (isinstance(row[k], float) and math.isnan(row[k]))
                                   else f"{row[k]:.6g}" for k in CURVE_COLUMNS)))


def plot(path: Path, cfg: ExperimentPreset, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(cfg.settings)
    keys = (("greedy_acc", "greedy accuracy"), ("sampled_acc", "accuracy at T=1"), ("zero_std", "zero-std groups"))
    fig, axes = plt.subplots(len(names), len(keys), figsize=(4.2 * len(keys), 3.2 * len(names)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        for j, (key, label) in enumerate(keys):
            ax = axes[i][j]
            for c, arm in enumerate(cfg.settings[name].arms):
                curves = [r["curve"] for r in runs if r["setting"] == name and r["arm"] == arm]
                steps = [row["step"] for row in max(curves, key=len)]
                stats = [bootstrap([c_[t][key] for c_ in curves if t < len(c_)]) for t in range(len(steps))]
                mean = np.array([s["mean"] if s["mean"] is not None else np.nan for s in stats])
                low = np.array([s["low"] if s["low"] is not None else np.nan for s in stats])
                high = np.array([s["high"] if s["high"] is not None else np.nan for s in stats])
                color = colors[c % len(colors)]
                ax.plot(steps, mean, color=color, label=arm, linewidth=1.5)
                ax.fill_between(steps, low, high, color=color, alpha=0.15, linewidth=0)
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.set_xlabel("RL step")
        axes[i][0].legend(fontsize=7)
    fig.suptitle(f"mean and 95 % bootstrap interval over {cfg.seeds} seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(out: Path, cfg: ExperimentPreset, warm: list[dict], runs: list[dict], context: dict) -> dict:
    metrics = {**context, "settings": summarize(cfg, warm, runs)}
    write_curves(out / "curves.csv", runs)
    plot(out / "curves.png", cfg, runs)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json))
    return metrics


def _json(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(type(value).__name__)
