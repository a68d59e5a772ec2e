"""The SGPO reward for online trainers: `SGPOReward`, a TRL reward function (`integrations.trl`), which also
scores verl's batches (`integrations.verl`).

    from sgpo_data.integrations.trl import SGPOReward
    trainer = GRPOTrainer(model=..., reward_funcs=[SGPOReward(judge="cascade")], train_dataset=prompts_view, ...)

TRL samples `num_generations` completions per prompt and calls the reward function with the batch's prompts and
completions and the dataset's columns. `SGPOReward` grades each completion against the reference answer column
(`solution`, the name TRL's own `accuracy_reward` reads) with the same grader as the offline pipeline, cuts the
wrong ones into steps, asks the judge (the same registry and options as `judge:` in a recipe) for their first
wrong steps, all of the call's rows at once, and returns the SGPO reward: 1 for a right answer, partial credit
for a judged wrong one, 0 otherwise (`score:` options decide the map). TRL then computes the group advantages,
so an all-negative group whose responses went wrong at different steps gets a reward spread and a gradient.

Each call logs `sgpo/all_negative_groups` and `sgpo/all_negative_groups_with_spread` through TRL's `log_metric`.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from sgpo_data.config import JudgeConfig, ScoreConfig, validate_options
from sgpo_data.graders import get_grader
from sgpo_data.judges import JudgeInput, Verdict, get_judge
from sgpo_data.judges.base import in_scope
from sgpo_data.schema import JudgeStatus
from sgpo_data.scoring import score_table
from sgpo_data.segmenters import get_segmenter


def _text(message) -> str:
    """A completion or prompt as text: a plain string, or the content of a chat's last message."""
    if isinstance(message, str):
        return message
    return message[-1]["content"] if message else ""


class SGPOReward:
    """A TRL reward function (`prompts`, `completions`, dataset columns as keyword arguments → one float each).

    `judge`: a judge name or a `judge:` section (dict or `JudgeConfig`: name, options, backend, model, segmenter,
    ...); its engine loads at the first request. `score`: the `score:` section. `grader`/`grader_options`: as in a
    recipe. `answer_column` holds the reference answer, `solution_column` the reference solution (optional)."""

    __name__ = "sgpo_reward"  # TRL names a reward function's metrics after it

    def __init__(self, judge: str | dict | JudgeConfig = "arith", score: dict | ScoreConfig | None = None,
                 grader: str = "math_verify", grader_options: dict | None = None, answer_column: str = "solution",
                 solution_column: str = "reference_solution", engine=None):
        if isinstance(judge, str):
            judge = {"name": judge}
        self.judge_config = judge if isinstance(judge, JudgeConfig) else validate_options(JudgeConfig, judge, "judge")
        self.score_config = score if isinstance(score, ScoreConfig) else validate_options(ScoreConfig, score or {}, "score")
        self.answer_column, self.solution_column = answer_column, solution_column
        cfg = self.judge_config
        self.segmenter = get_segmenter(cfg.segmenter, cfg.segmenter_options)
        if engine is None:
            from sgpo_data.backends import get_backend

            engine = lambda: get_backend(cfg.backend, cfg.model, cfg.backend_options, "judge.backend_options")  # noqa: E731
        self.judge = get_judge(cfg.name, engine, cfg.options)
        self.grader = get_grader(grader, grader_options or {})
        self.last: dict = {}  # the last call's rows and counts, for inspection

    def __call__(self, prompts, completions, completion_ids=None, log_metric=None, **columns) -> list[float]:
        answers = columns.get(self.answer_column)
        if answers is None:
            raise KeyError(f"SGPOReward: the dataset has no {self.answer_column!r} column (the reference answer); "
                           f"use the `prompts` view or pass answer_column=")
        groups = [json.dumps(p, sort_keys=True) if not isinstance(p, str) else p for p in prompts]
        rewards = self.rewards([_text(c) for c in completions], list(answers), groups,
                               columns.get("problem") or [_text(p) for p in prompts],
                               columns.get(self.solution_column),
                               [list(p) if not isinstance(p, str) else None for p in prompts])
        if log_metric is not None:
            log_metric("sgpo/all_negative_groups", float(self.last["all_negative_groups"]))
            log_metric("sgpo/all_negative_groups_with_spread", float(self.last["all_negative_groups_with_spread"]))
        return rewards

    def rewards(self, texts: list[str], answers: list[str | None], groups: list, problems: list[str],
                solutions: list[str | None] | None = None, prompts: list | None = None) -> list[float]:
        """SGPO rewards of responses `texts`; `groups` says which responses answer the same prompt."""
        n = len(texts)
        solutions, prompts = solutions or [None] * n, prompts or [None] * n
        correct = [g.is_correct is True for g in self.grader.grade(texts, answers)]
        steps = self.segmenter.split_many(texts).to_pylist()
        negative = set(groups) - {g for g, c in zip(groups, correct) if c}
        judged = in_scope(self.judge_config.scope, np.ones(n, dtype=bool), np.array(correct, dtype=bool),
                          groups).nonzero()[0].tolist()
        items = [JudgeInput(problems[i], solutions[i], steps[i], answers[i], prompts[i]) for i in judged]
        verdicts: list = [None] * n
        found = self.judge.judge(items, self.judge_config.max_in_flight, [groups[i] for i in judged]) if items else []
        for i, verdict in zip(judged, found):
            if not isinstance(verdict, Verdict):
                raise verdict  # the judge's service failed
            verdicts[i] = verdict
        table = pa.table({
            "prompt_id": [str(g) for g in groups], "is_correct": correct,
            "steps": pa.array(steps, pa.list_(pa.string())),
            "first_error_step": pa.array([v.first_error_step if v else None for v in verdicts], pa.int32()),
            "judge_status": [v.status if v else JudgeStatus.SKIPPED_CORRECT for v in verdicts],
        })
        rewards = score_table(table, self.score_config)["reward"].to_numpy(zero_copy_only=False)
        rewards = np.nan_to_num(rewards.astype(np.float64), nan=0.0)
        spread = {g for g in negative if np.ptp([r for r, h in zip(rewards, groups) if h == g]) > 0}
        self.last = {"rewards": rewards.tolist(), "correct": correct, "verdicts": verdicts,
                     "all_negative_groups": len(negative), "all_negative_groups_with_spread": len(spread)}
        return rewards.tolist()

    def close(self) -> None:
        self.judge.close()
        self.grader.close()
