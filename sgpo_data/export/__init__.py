"""Export: views of a scored run for TRL, verl, stepwise PRM training and `datasets`; filters; splits.

Pure functions over Arrow tables; reading the run folder, writing files and publishing live elsewhere."""

from sgpo_data.export.filters import apply_filters
from sgpo_data.export.splits import choose_test_prompts, split_by_prompt, split_on
from sgpo_data.export.views import MESSAGES, VIEWS, View, get_view

__all__ = ["MESSAGES", "VIEWS", "View", "apply_filters", "choose_test_prompts", "get_view", "split_by_prompt",
           "split_on"]
