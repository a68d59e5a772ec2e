"""Input prompts: the embedded arithmetic generator and a loader for local files and Hub datasets."""

from sgpo_data.data.arithmetic import generate_arithmetic
from sgpo_data.data.loader import load_prompts

__all__ = ["generate_arithmetic", "load_prompts"]
