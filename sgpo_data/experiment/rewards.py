"""Each arm's reward, from the product's `SGPOReward`: the `chain` judge (exact) for `sgpo` and `step`, the `noisy`
judge around it for `noisy_<p>`, and the outcome that the same call grades for `grpo`.

Every arm also asks the exact judge, so that the statistics of its groups (which are all-negative, whether their
responses all fail at the same step) are measured the same way in every arm; for `grpo` and `sgpo` that is the
one call that gives the reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgpo_data.experiment.presets import ExperimentPreset, noisy_p
from sgpo_data.graders.base import Grader, GradeResult
from sgpo_data.integrations.reward import SGPOReward
from sgpo_data.schema import GradeStatus

_EXACT_JUDGE = {"name": "chain", "segmenter": "lines"}


class LastLineGrader(Grader):
    """The task's own outcome check, exact and in-process: the response's last line against the answer. A
    stand-in for math_verify where no worker process may start (the fast tests); on this task they agree."""

    def grade(self, responses: list[str], references: list[str | None]) -> list[GradeResult]:
        results = []
        for response, reference in zip(responses, references):
            answer = response.rstrip("\n").rsplit("\n", 1)[-1].strip()
            results.append(GradeResult(answer or None, bool(answer) and answer == reference, GradeStatus.OK))
        return results


@dataclass
class Graded:
    rewards: np.ndarray  # the arm's reward per response
    correct: np.ndarray  # outcome, bool
    first_errors: np.ndarray  # the exact judge's first error (-1: none found; -2: not judged, a right answer)


class ArmReward:
    def __init__(self, arm: str, preset: ExperimentPreset, seed: int):
        self.arm = arm
        self.exact = self._reward(_EXACT_JUDGE, preset.score, preset)
        self.own = None
        if (p := noisy_p(arm)) is not None:
            judge = {**_EXACT_JUDGE, "name": "noisy", "options": {"judge": "chain", "p": p, "seed": seed}}
            self.own = self._reward(judge, preset.score, preset)
        elif arm == "step":
            self.own = self._reward(_EXACT_JUDGE, {**preset.score, "reward_map": "step"}, preset)

    @staticmethod
    def _reward(judge: dict, score: dict, preset: ExperimentPreset) -> SGPOReward:
        reward = SGPOReward(judge=judge, score=score, grader="math_verify", grader_options={"workers": 1})
        if preset.grader == "exact":
            reward.grader.close()
            reward.grader = LastLineGrader()
        return reward

    def __call__(self, texts: list[str], answers: list[str], groups: list[str], problems: list[str],
                 solutions: list[str]) -> Graded:
        sgpo = np.array(self.exact.rewards(texts, answers, groups, problems, solutions))
        last = self.exact.last
        correct = np.array(last["correct"], dtype=bool)
        first = np.array([v.first_error_step if v is not None and v.first_error_step is not None else -2
                          for v in last["verdicts"]])
        if self.arm == "grpo":
            rewards = correct.astype(np.float64)
        elif self.own is None:
            rewards = sgpo
        else:
            rewards = np.array(self.own.rewards(texts, answers, groups, problems, solutions))
        return Graded(rewards, correct, first)

    def close(self) -> None:
        self.exact.close()
        if self.own is not None:
            self.own.close()
