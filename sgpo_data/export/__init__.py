"""Export: views of a scored run for TRL, verl, stepwise PRM training and `datasets`; filters; splits.

Pure functions over Arrow tables; reading the run folder, writing files and publishing live elsewhere."""

from sgpo_data.export.filters import apply_filters
from sgpo_data.export.splits import split_by_prompt
from sgpo_data.export.views import MESSAGES, VIEWS, View, get_view

__all__ = ["MESSAGES", "VIEWS", "View", "apply_filters", "get_view", "split_by_prompt"]
