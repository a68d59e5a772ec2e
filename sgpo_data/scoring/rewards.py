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


def step(rts: np.ndarray, credit: float) -> np.ndarray:
    """A fixed credit for every judged wrong response, wherever its first error is (an ablation)."""
    return np.full(np.shape(rts), credit, dtype=np.float64)


@REWARD_MAPS.register("sigmoid")
def _sigmoid_map(cfg: ScoreConfig) -> RewardFn:
    return lambda rts: sigmoid(rts, cfg.beta, cfg.gamma)


@REWARD_MAPS.register("linear")
def _linear_map(cfg: ScoreConfig) -> RewardFn:
    return lambda rts: linear(rts, cfg.alpha)


@REWARD_MAPS.register("step")
def _step_map(cfg: ScoreConfig) -> RewardFn:
    return lambda rts: step(rts, cfg.step_credit)


def compute_rts(first_error_step: np.ndarray, weights: np.ndarray, offsets: np.ndarray, applies: np.ndarray,
                no_error_rule: str = "last_step") -> np.ndarray:
    """RTS: the share of the response that is right before its first error.

    Row i has steps `offsets[i]:offsets[i+1]` of the flat `weights` (1 per step for plain k/K; characters or
    tokens for the weighted variants). A first error at step k gives `sum(w[:k]) / sum(w)`. k == -1 (the
    judge found no error, yet the answer is wrong) becomes k = K-1 ('last_step') or k = K ('all_steps');
    'no_credit' leaves RTS undefined there. A response with zero total weight has RTS 0. Returns float64 with
    NaN where RTS does not apply (`applies` False). The caller checks -1 <= k < K beforehand.
    """
    k = np.asarray(first_error_step, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    num_steps = np.diff(offsets)
    applies = np.asarray(applies, dtype=bool).copy()
    no_error = k == -1
    if no_error_rule == "no_credit":
        applies &= ~no_error
    k = np.where(no_error, num_steps - (1 if no_error_rule == "last_step" else 0), k)
    k = np.clip(np.where(applies, k, 0), 0, num_steps)
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(weights, dtype=np.float64))])
    before = cum[offsets[:-1] + k] - cum[offsets[:-1]]
    total = cum[offsets[1:]] - cum[offsets[:-1]]
    with np.errstate(divide="ignore", invalid="ignore"):
        rts = np.where(total > 0, before / total, 0.0)
    return np.where(applies, rts, np.nan)
