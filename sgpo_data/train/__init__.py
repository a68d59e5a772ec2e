"""The offline SGPO trainer: `train(cfg, out)`; see trainer.py for what the algorithm does."""

from sgpo_data.train.trainer import OfflineTrainer, train

__all__ = ["OfflineTrainer", "train"]
