"""Scoring: RTS and partial-credit rewards, GRPO/SGPO group advantages, run statistics."""

from sgpo_data.scoring.advantages import group_advantages
from sgpo_data.scoring.rewards import REWARD_MAPS, compute_rts
from sgpo_data.scoring.score import score_stats, score_summary, score_table, score_tally

__all__ = ["REWARD_MAPS", "compute_rts", "group_advantages", "score_stats", "score_summary", "score_table", "score_tally"]
