"""From the judge's first error to a reward: RTS and the partial-credit maps (ARCHITECTURE.md, "The SGPO reward").

A reward map is registered by name; its factory takes the `ScoreConfig` and returns a vectorised function
`rts array -> reward array`: `REWARD_MAPS.get("sigmoid", cfg=cfg)(rts)`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sgpo_data.config import ScoreConfig
from sgpo_data.registry import Registry

RewardFn = Callable[[np.ndarray], np.ndarray]
REWARD_MAPS: Registry[RewardFn] = Registry("reward map")

# Rewards are stored as float32. A steep sigmoid rounds to exactly 0.0 or 1.0 there, which would make a
# wrong response as good as a right one; clipping to the nearest float32 inside (0, 1) keeps the promise.
_LO = float(np.finfo(np.float32).tiny)
_HI = float(np.nextafter(np.float32(1.0), np.float32(0.0)))


def sigmoid(rts: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    """`1 / (1 + exp(-beta * (rts - gamma)))`, increasing in RTS, strictly inside (0, 1) even as float32."""
    x = -beta * (np.asarray(rts, dtype=np.float64) - gamma)
    with np.errstate(over="ignore"):  # exp overflow -> inf -> reward 0, then clipped to _LO
        r = 1.0 / (1.0 + np.exp(x))
    return np.clip(r, _LO, _HI)


def linear(rts: np.ndarray, alpha: float) -> np.ndarray:
    """`alpha * rts`, the paper's linear alternative. Exception to "strictly inside (0, 1)": rts 0
    (the very first step is wrong) gets reward 0, the same as plain GRPO."""
    return np.minimum(alpha * np.asarray(rts, dtype=np.float64), _HI)


@REWARD_MAPS.register("sigmoid")
def _sigmoid_map(cfg: ScoreConfig) -> RewardFn:
    return lambda rts: sigmoid(rts, cfg.beta, cfg.gamma)


@REWARD_MAPS.register("linear")
def _linear_map(cfg: ScoreConfig) -> RewardFn:
    return lambda rts: linear(rts, cfg.alpha)


def compute_rts(
    first_error_step: np.ndarray, num_steps: np.ndarray, is_correct: np.ndarray, judged_ok: np.ndarray
) -> np.ndarray:
    """RTS = k / K for each judged wrong response whose first error is step k (0-based) of K steps.

    k == -1 (the judge found no error, yet the answer is wrong) means the error is the final answer:
    k = K - 1 (rule 'last_step'). Returns float64 with NaN where RTS does not apply (correct or not
    judged rows); there `first_error_step` may hold anything. The caller checks -1 <= k < K beforehand.
    """
    k = np.asarray(first_error_step, dtype=np.float64)
    n = np.asarray(num_steps, dtype=np.float64)
    applies = np.asarray(judged_ok, dtype=bool) & ~np.asarray(is_correct, dtype=bool)
    k = np.where(k == -1, n - 1, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(applies, k / n, np.nan)
