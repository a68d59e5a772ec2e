"""sgpo-data: offline datasets and training for Stepwise Guided Policy Optimization (SGPO)."""

__version__ = "0.1.0"
