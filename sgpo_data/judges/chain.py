"""The `chain` judge: exact first errors for tasks whose solution path is unique and written one step per line,
such as the running totals of `sgpo-data experiment` (sgpo_data.experiment.task).

On such a task a step is right exactly when it equals the reference solution's step of the same index, given
that the steps before it are right; so the first error is the first step that differs from the reference (its
line, stripped of surrounding whitespace), or the first step past the reference's last one. A response that
agrees with the reference as far as it goes, but stops short, has no wrong step: -1, and the scoring's
`no_error_rule` decides its credit. Without a reference solution the judge cannot decide (`parse_error`).
For free-form solutions, where a right step can be written many ways, this judge is wrong; use `arith` or an
LLM judge there.
"""

from __future__ import annotations

from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Verdict
from sgpo_data.schema import JudgeStatus


def first_wrong_step(steps: list[str], reference_steps: list[str]) -> int:
    """Index of the first step that differs from the reference's step of the same index; -1 when none does."""
    for k, step in enumerate(steps):
        if k >= len(reference_steps) or step.strip() != reference_steps[k].strip():
            return k
    return -1


class ChainJudge(Judge):
    model_name = "chain"

    def decide(self, item: JudgeInput) -> Verdict:
        if item.reference_solution is None:
            return Verdict(None, JudgeStatus.PARSE_ERROR, "no reference solution to compare with", judge="chain")
        reference = [line for line in item.reference_solution.splitlines() if line.strip()]
        k = first_wrong_step(item.steps, reference)
        raw = "no step differs from the reference" if k < 0 else f"step {k} differs from the reference"
        return Verdict(k, JudgeStatus.OK, raw, judge="chain")


@JUDGES.register("chain")
def _chain(engine, options, policy=None) -> Judge:
    """Checks each step of a running-total chain (the experiment's task) exactly; no model."""
    return ChainJudge()
