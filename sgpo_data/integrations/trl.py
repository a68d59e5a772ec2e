"""The SGPO reward as a TRL reward function, for `trl.GRPOTrainer(reward_funcs=[SGPOReward(...)])`; see
`sgpo_data.integrations.reward`."""

from sgpo_data.integrations.reward import SGPOReward

__all__ = ["SGPOReward"]
