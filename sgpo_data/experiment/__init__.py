"""`sgpo-data experiment`: does SGPO make a policy learn faster than GRPO, and how good must the judge be?

A controlled experiment with a neural policy that learns: a small transformer trained from scratch on running
totals modulo M (`task`: every step checkable exactly, answers hard to guess), a supervised warm-up to a chosen
initial success, then online RL in arms that differ only in the reward (`presets`: GRPO, SGPO with the exact
judge, with the noisy judge at several p, with position-free credit). Rewards come from the product's
`SGPOReward` and judges, advantages from `scoring`, the loss from the offline trainer (`loop`); every arm runs on
the same seeds, and `report` gives curves, intervals, paired differences against GRPO and `simulate`'s prediction.

    from sgpo_data.experiment import run_experiment
    metrics = run_experiment("/tmp/exp", preset="cpu", quick=True)

Importing this package loads neither torch nor the judges; `run_experiment` does.
"""

from __future__ import annotations


def run_experiment(out, preset: str = "cpu", quick: bool = False, seeds: int | None = None, overrides=None,
                   log=None) -> dict:
    """See `sgpo_data.experiment.runner.run_experiment`."""
    from sgpo_data.experiment.runner import run_experiment as run

    return run(out, preset, quick, seeds, overrides, log)


__all__ = ["run_experiment"]
