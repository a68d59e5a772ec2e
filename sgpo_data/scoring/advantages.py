"""Group-relative advantages, vectorised over rows in any order (groups need not be contiguous).

The default, `(r - mean_group) / (std_group + eps)` with the unbiased std (ddof=1) and eps 1e-4, is TRL's
GRPO formula. A group of one response has no baseline and an undefined unbiased std; its advantage is 0 by
convention, under every estimator.
"""

from __future__ import annotations

import numpy as np

from sgpo_data.errors import SgpoError

SCALES = ("group", "batch", "none", "rloo")


def group_moments(values: np.ndarray, group_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-row group index, and per group: size, mean and unbiased std (0 for a group of one).

    Sums are taken around each group's first value, so a group of identical values gets a mean equal
    to that value and a std of exactly 0 (no 1e-17 residue that eps would turn into a tiny advantage).
    """
    values = np.asarray(values, dtype=np.float64)
    _, first, inverse, counts = np.unique(group_ids, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)  # numpy 2.0.x returns the input's shape here
    ngroups = len(counts)
    shifted = values - values[first][inverse]
    mean = values[first] + np.bincount(inverse, weights=shifted, minlength=ngroups) / counts
    dev = values - mean[inverse]
    sq = np.bincount(inverse, weights=dev * dev, minlength=ngroups)
    std = np.sqrt(sq / np.maximum(counts - 1, 1))
    return inverse, counts, mean, std


def group_advantages(rewards: np.ndarray, group_ids: np.ndarray, eps: float = 1e-4, scale: str = "group",
                     std_floor: float = 0.0, batch_std: float | None = None) -> np.ndarray:
    """float32 advantages, one estimator per `scale`:

    - 'group': (r - group mean) / (max(group std, std_floor) + eps), GRPO as TRL computes it;
    - 'batch': the same with the std of all rewards (TRL's scale_rewards='batch'), or `batch_std` when the
      batch is larger than these rewards (a run scored shard by shard);
    - 'none': r - group mean (Dr. GRPO);
    - 'rloo': r - mean of the *other* responses of the group = G/(G-1) * (r - group mean) (RLOO).
    """
    if scale not in SCALES:
        raise SgpoError(f"unknown advantage scale {scale!r}; valid names: {', '.join(SCALES)}")
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != np.shape(group_ids) or rewards.ndim != 1:
        raise SgpoError(f"rewards {rewards.shape} and group_ids {np.shape(group_ids)} must be 1-d and the same length")
    if rewards.size == 0:
        return np.zeros(0, dtype=np.float32)
    inverse, counts, mean, std = group_moments(rewards, group_ids)
    adv = rewards - mean[inverse]  # exactly 0 in a group of one
    if scale == "group":
        adv = adv / (np.maximum(std[inverse], std_floor) + eps)
    elif scale == "batch":
        if batch_std is None:
            batch_std = rewards.std(ddof=1) if rewards.size > 1 else 0.0
        adv = adv / (max(batch_std, std_floor) + eps)
    elif scale == "rloo":
        size = counts[inverse]
        adv = adv * size / np.maximum(size - 1, 1)
    return adv.astype(np.float32)
