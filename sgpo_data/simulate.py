"""GRPO vs SGPO in the simplified two-step reasoning setting, exactly and by Monte-Carlo.

The model (the paper's toy setting, arXiv 2505.11595):

* Policy parameters theta = (theta1, theta2); p1 = sigmoid(theta1) = P(step 1 right),
  p2 = sigmoid(theta2) = P(step 2 right). A response is correct only if both steps are right.
* Three outcome classes, in this order everywhere below:
  W1 (step 1 wrong, first error at step 1, RTS 0), W2 (step 1 right, step 2 wrong, RTS 1/2), C (correct),
  with probabilities q = (1 - p1, p1 (1 - p2), p1 p2).
* Rewards: GRPO gives 1 to C and 0 otherwise. SGPO gives 1 to C and reward_map(rts) to W1 and W2
  (default: the sigmoid map 1 / (1 + exp(-5 (rts - 0.5))), i.e. W1 -> 0.076, W2 -> 0.5).
* Score function of each class w.r.t. (theta1, theta2): W1 (-p1, 0), W2 (1 - p1, -p2), C (1 - p1, 1 - p2).
  For W1 the step-2 term is replaced by its conditional mean, 0: the reward and the advantage do not depend
  on step 2 once step 1 is wrong. This lowers Monte-Carlo variance and leaves the expectation unchanged.
* A group is G samples. Advantages follow TRL's GRPO: A_i = (r_i - mean) / (std + 1e-4), std the unbiased
  group std; a group with a single class (std 0) gets advantage 0. The group's gradient estimate is
  (1/G) sum_i A_i score(o_i), and the update is plain gradient ascent theta <- theta + lr * gradient.
* Exact dynamics: the estimate depends on the group only through its class counts n = (n_W1, n_W2, n_C), so
  the expected gradient is sum_n Multinomial(n; G, q) (1/G) sum_k n_k A_k(n) score_k, summed over all
  (G+1)(G+2)/2 count vectors; theta is then iterated deterministically.
* Monte-Carlo: each iteration draws `mc_groups` groups and averages their estimates; `mc_seeds` independent
  replicas give a mean and std of p1 p2. Each (setting, method) gets a fresh numpy Generator(seed), so a
  setting's numbers do not depend on the rest of the grid and GRPO and SGPO share random numbers.
* Start: initial success rate s0 means p1 = p2 = sqrt(s0).

What it shows: with GRPO an all-negative group (no C) has identical rewards and contributes nothing, so
at low s0 and small G almost every group is wasted; SGPO's partial credit still ranks W2 above W1 there
and pushes theta1 up. The same credit also rewards W2's wrong step 2, so early on SGPO moves theta2 more
slowly than GRPO (at s0 = 0.01, G = 4 its theta2 gradient is 0.0013 against GRPO's 0.013); the net effect
on p1 p2 is still about a 2x speed-up there. Where all-negative groups are rare the two move alike.

At high s0 SGPO is not faster and can be marginally slower (ratios 0.95-1.0 for target 0.9): partial
credit spreads the rewards of wrong responses, which raises the group std and shrinks C's advantage.

Defaults: lr = 0.25. Along the default trajectories the exact gradient stays below about 0.44 per
coordinate, so one step moves a logit by at most about 0.11 and the iteration follows the gradient flow;
the slowest default setting (GRPO, s0 = 0.01, G = 4) then needs about 240 iterations to reach the target
0.8, and the fastest about 20, so ratios resolve to a few percent within `iterations` = 300. The ratios
hardly depend on lr (0.2, 0.25 and 0.5 agree within 0.06). Speed-ups come from the exact trajectories,
never from the noisy Monte-Carlo ones.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

import numpy as np

from sgpo_data.errors import SgpoError

RewardMap = Callable[[np.ndarray], np.ndarray]
CLASS_RTS = np.array([0.0, 0.5])  # RTS of W1 and W2: fraction of the two steps right before the first error
EPS = 1e-4  # TRL's GRPO: (r - mean) / (std + 1e-4)
METHODS = ("grpo", "sgpo")
CSV_COLUMNS = (
    "method", "init_success", "group_size", "iteration",
    "success_exact", "success_mc_mean", "success_mc_std", "all_negative_exact",
)


def sigmoid_reward_map(rts: np.ndarray, beta: float = 5.0, gamma: float = 0.5) -> np.ndarray:
    """The default SGPO map, the scoring stage's own: 1 / (1 + exp(-beta (rts - gamma)))."""
    from sgpo_data.scoring.rewards import sigmoid

    return sigmoid(rts, beta, gamma)


def class_rewards(method: str, reward_map: RewardMap | None = None) -> np.ndarray:
    """Rewards of (W1, W2, C) under `method`."""
    if method == "grpo":
        return np.array([0.0, 0.0, 1.0])
    if method == "sgpo":
        partial = np.asarray((reward_map or sigmoid_reward_map)(CLASS_RTS), dtype=float)
        if partial.shape != (2,) or not np.all(np.isfinite(partial)):
            raise SgpoError(f"reward_map must return two finite rewards for rts {CLASS_RTS.tolist()}, got {partial!r}")
        return np.array([partial[0], partial[1], 1.0])
    raise SgpoError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def class_probs(theta: np.ndarray) -> np.ndarray:
    """q = (1 - p1, p1 (1 - p2), p1 p2) for theta of shape (..., 2)."""
    p1, p2 = _sigmoid(theta[..., 0]), _sigmoid(theta[..., 1])
    return np.stack([1.0 - p1, p1 * (1.0 - p2), p1 * p2], axis=-1)


def class_scores(theta: np.ndarray) -> np.ndarray:
    """Score of each class w.r.t. (theta1, theta2), shape (..., 3, 2)."""
    p1, p2 = _sigmoid(theta[..., 0]), _sigmoid(theta[..., 1])
    zero = np.zeros_like(p1)
    return np.stack([
        np.stack([-p1, zero], axis=-1),
        np.stack([1.0 - p1, -p2], axis=-1),
        np.stack([1.0 - p1, 1.0 - p2], axis=-1),
    ], axis=-2)


def count_vectors(group_size: int) -> np.ndarray:
    """All (n_W1, n_W2, n_C) with sum `group_size`, shape (K, 3)."""
    g = group_size
    return np.array([(a, b, g - a - b) for a in range(g + 1) for b in range(g + 1 - a)], dtype=np.int64)


def count_probs(counts: np.ndarray, q: np.ndarray, log_coef: np.ndarray | None = None) -> np.ndarray:
    """Multinomial probabilities of the count vectors `counts` (K, 3) under class probabilities q (3,).
    `log_coef`, the log multinomial coefficients, may be passed in to save recomputing them every step."""
    if log_coef is None:
        log_coef = log_multinomial_coef(counts)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 * log(0) is 0: probability-0 class seen 0 times
        log_terms = np.where(counts > 0, counts * np.log(q), 0.0)
    return np.exp(log_coef + log_terms.sum(axis=1))


def log_multinomial_coef(counts: np.ndarray) -> np.ndarray:
    """log(G! / (n_W1! n_W2! n_C!)) per count vector, with lgamma so large G cannot overflow."""
    return np.array([math.lgamma(int(row.sum()) + 1) - sum(math.lgamma(int(n) + 1) for n in row) for row in counts])


def class_advantages(counts: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Per-class GRPO advantages for groups given by their class counts (..., 3); same shape out."""
    g = counts.sum(axis=-1, keepdims=True)
    mean = (counts * rewards).sum(axis=-1, keepdims=True) / g
    std = np.sqrt((counts * (rewards - mean) ** 2).sum(axis=-1, keepdims=True) / (g - 1))
    adv = (rewards - mean) / (std + EPS)
    # A single-class group has std 0 exactly; rounding in `mean` must not leave a 1e-13 advantage behind.
    return np.where(counts.max(axis=-1, keepdims=True) == g, 0.0, adv)


def gradient_weights(group_size: int, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Count vectors and their weights n_k A_k / G: the expected gradient is (P(n) @ weights) @ scores."""
    counts = count_vectors(group_size)
    return counts, counts * class_advantages(counts, rewards) / group_size


def expected_gradient(theta: np.ndarray, group_size: int, rewards: np.ndarray) -> np.ndarray:
    """Exact expected policy gradient of one group at theta (2,)."""
    counts, weights = gradient_weights(group_size, rewards)
    return (count_probs(counts, class_probs(theta)) @ weights) @ class_scores(theta)


def exact_trajectory(init_success: float, group_size: int, rewards: np.ndarray,
                     iterations: int, lr: float) -> np.ndarray:
    """Success probability p1 p2 at iterations 0..`iterations` under the exact expected update."""
    counts, weights = gradient_weights(group_size, rewards)
    log_coef = log_multinomial_coef(counts)
    theta = _initial_theta(init_success)
    success = np.empty(iterations + 1)
    for t in range(iterations + 1):
        q = class_probs(theta)
        success[t] = q[2]
        theta = theta + lr * (count_probs(counts, q, log_coef) @ weights) @ class_scores(theta)
    return success


def sample_counts(q: np.ndarray, group_size: int, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Class counts of `n_groups` sampled groups per replica: q (R, 3) -> counts (R, n_groups, 3)."""
    u = rng.random((q.shape[0], n_groups, group_size))
    cls = (u[..., None] >= np.cumsum(q, axis=-1)[:, None, None, :2]).sum(axis=-1)  # 0, 1 or 2
    return np.stack([(cls == k).sum(axis=-1) for k in range(3)], axis=-1)


def mc_trajectories(init_success: float, group_size: int, rewards: np.ndarray, iterations: int, lr: float,
                    n_groups: int, n_replicas: int, rng: np.random.Generator) -> np.ndarray:
    """Success probability per replica and iteration, shape (n_replicas, iterations + 1)."""
    theta = np.tile(_initial_theta(init_success), (n_replicas, 1))
    success = np.empty((n_replicas, iterations + 1))
    for t in range(iterations + 1):
        q = class_probs(theta)
        success[:, t] = q[:, 2]
        counts = sample_counts(q, group_size, n_groups, rng)
        weights = (counts * class_advantages(counts, rewards)).mean(axis=1) / group_size  # (R, 3)
        theta = theta + lr * np.einsum("rk,rkj->rj", weights, class_scores(theta))
    return success


def iterations_to_target(success: np.ndarray, target: float) -> int | None:
    """First iteration whose success is >= target, or None if it is never reached."""
    hit = np.flatnonzero(success >= target)
    return int(hit[0]) if hit.size else None


def run_simulation(out_dir: str | Path, init_success=(0.01, 0.05, 0.2, 0.5), group_sizes=(4, 8, 16),
                   iterations: int = 300, lr: float = 0.25, target: float = 0.8, mc_groups: int = 16,
                   mc_seeds: int = 16, reward_map: RewardMap | None = None, seed: int = 0) -> list[dict]:
    """Run both methods for every (init_success, group_size); write dynamics.csv and dynamics.png."""
    _validate(init_success, group_sizes, iterations, lr, target, mc_groups, mc_seeds)
    group_sizes, iterations = tuple(map(int, group_sizes)), int(iterations)
    mc_groups, mc_seeds = int(mc_groups), int(mc_seeds)
    rewards = {m: class_rewards(m, reward_map) for m in METHODS}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves, summary = {}, []
    for s0 in init_success:
        for g in group_sizes:
            hits = {}
            for m in METHODS:
                exact = exact_trajectory(s0, g, rewards[m], iterations, lr)
                rng = np.random.default_rng(seed)
                mc = mc_trajectories(s0, g, rewards[m], iterations, lr, mc_groups, mc_seeds, rng)
                curves[m, s0, g] = (exact, mc)
                hits[m] = iterations_to_target(exact, target)
            summary.append(_summary_row(s0, g, hits, iterations))
    _write_csv(out / "dynamics.csv", curves)
    _plot(out / "dynamics.png", curves, summary, target)
    return summary


def format_summary(rows: list[dict]) -> str:
    """A plain text table of the summary rows returned by `run_simulation`."""
    head = f"{'s0':>6} {'G':>3} {'P(all-neg)':>10} {'GRPO it':>8} {'SGPO it':>8} {'speed-up':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["speedup"] is not None:
            speed = f"{r['speedup']:.2f}"
        elif r["speedup_lower_bound"] is not None:
            speed = f">={r['speedup_lower_bound']:.2f}"
        else:
            speed = "n/a"
        lines.append(f"{r['init_success']:>6g} {r['group_size']:>3d} {r['all_negative_initial']:>10.3f} "
                     f"{_it(r['grpo_iterations']):>8} {_it(r['sgpo_iterations']):>8} {speed:>9}")
    lines.append("it = exact iterations to the target ('-' = not reached); '>=' = GRPO never reached it, "
                 "so the run length bounds the speed-up from below")
    return "\n".join(lines)


def _summary_row(s0: float, g: int, hits: dict, iterations: int) -> dict:
    grpo, sgpo = hits["grpo"], hits["sgpo"]
    both = grpo is not None and sgpo is not None and sgpo > 0
    bound = grpo is None and sgpo is not None and sgpo > 0
    return {
        "init_success": s0, "group_size": g, "grpo_iterations": grpo, "sgpo_iterations": sgpo,
        "speedup": grpo / sgpo if both else None,
        "speedup_lower_bound": iterations / sgpo if bound else None,
        "all_negative_initial": (1.0 - s0) ** g,
    }


def _write_csv(path: Path, curves: dict) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for (m, s0, g), (exact, mc) in curves.items():
            mean, std = mc.mean(axis=0), mc.std(axis=0)
            for t, s in enumerate(exact):
                writer.writerow([m, s0, g, t, f"{s:.6g}", f"{mean[t]:.6g}", f"{std[t]:.6g}", f"{(1 - s) ** g:.6g}"])


def _plot(path: Path, curves: dict, summary: list[dict], target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    init_success = list(dict.fromkeys(r["init_success"] for r in summary))
    group_sizes = list(dict.fromkeys(r["group_size"] for r in summary))
    rows, cols = len(init_success), len(group_sizes)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), sharex=True, sharey=True, squeeze=False)
    for r in summary:
        s0, g = r["init_success"], r["group_size"]
        i, j = init_success.index(s0), group_sizes.index(g)
        ax = axes[i][j]
        for m, color in zip(METHODS, ("tab:blue", "tab:orange")):
            exact, mc = curves[m, s0, g]
            x, mean, std = np.arange(exact.size), mc.mean(axis=0), mc.std(axis=0)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
            ax.plot(x, mean, color=color, linewidth=0.7, alpha=0.8, label=f"{m.upper()} MC mean ± std")
            ax.plot(x, exact, color=color, linewidth=2, label=f"{m.upper()} exact")
        ax.axhline(target, color="gray", linestyle=":", linewidth=1, label="target")
        ax.set_title(f"s0={s0:g}, G={g}: GRPO {_it(r['grpo_iterations'])} it, "
                     f"SGPO {_it(r['sgpo_iterations'])} it", fontsize=8)
        if i == rows - 1:
            ax.set_xlabel("iteration")
        if j == 0:
            ax.set_ylabel("success p1·p2")
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _validate(init_success, group_sizes, iterations, lr, target, mc_groups, mc_seeds) -> None:
    if not init_success or any(not 0.0 < float(s) < 1.0 for s in init_success):
        raise SgpoError(f"init_success must be non-empty with every value in (0, 1), got {tuple(init_success)}")
    if not group_sizes or any(int(g) != g or g < 2 for g in group_sizes):
        raise SgpoError(f"group_sizes must be integers >= 2 (a group of one has no advantage), "
                        f"got {tuple(group_sizes)}")
    for name, values in (("init_success", init_success), ("group_sizes", group_sizes)):
        if len(set(values)) != len(values):
            raise SgpoError(f"{name} must not repeat a value, got {tuple(values)}")
    checks = [("iterations", iterations, iterations >= 1 and int(iterations) == iterations, "an integer >= 1"),
              ("lr", lr, math.isfinite(lr) and lr > 0, "a finite number > 0"),
              ("target", target, 0.0 < target < 1.0, "in (0, 1)"),
              ("mc_groups", mc_groups, mc_groups >= 1 and int(mc_groups) == mc_groups, "an integer >= 1"),
              ("mc_seeds", mc_seeds, mc_seeds >= 1 and int(mc_seeds) == mc_seeds, "an integer >= 1")]
    for name, value, ok, want in checks:
        if not ok:
            raise SgpoError(f"{name} must be {want}, got {value!r}")


def _initial_theta(init_success: float) -> np.ndarray:
    p = math.sqrt(init_success)
    return np.full(2, math.log(p / (1.0 - p)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


def _it(n: int | None) -> str:
    return "-" if n is None else str(n)
