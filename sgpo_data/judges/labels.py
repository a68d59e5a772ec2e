"""The `labels` judge: the first-error index is read from a column of the row (human labels, another judge's
output), -1 meaning no error. Nothing is asked; a value that is not an index in -1..K-1 is a parse error with the
value kept as the raw answer."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Verdict
from sgpo_data.judges.parse import parse_first_error
from sgpo_data.schema import JudgeStatus


class LabelsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str = Field("label", description="the column holding each row's first-error index (-1: no error)")


class LabelsJudge(Judge):
    model_name = "labels"

    def __init__(self, options: LabelsOptions | None = None):
        super().__init__()
        self.column = (options or LabelsOptions()).column
        self.columns = (self.column,)

    def decide(self, item: JudgeInput) -> Verdict:
        value = item.columns.get(self.column)
        raw = None if value is None else str(value)
        if isinstance(value, bool) or not isinstance(value, (int, str, type(None))):
            verdict = Verdict(None, JudgeStatus.PARSE_ERROR, raw)
        else:
            verdict = parse_first_error(raw, len(item.steps))
        return Verdict(verdict.first_error_step, verdict.status, raw, judge=f"labels:{self.column}")


@JUDGES.register("labels", options=LabelsOptions)
def _labels(engine, options: LabelsOptions, policy=None) -> Judge:
    """Reads the first error from a column of the data (human or earlier labels)."""
    return LabelsJudge(options)
