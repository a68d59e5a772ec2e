"""The SGPO reward for online trainers: `SGPOReward`, a TRL reward function (`integrations.trl`), which also
scores verl's responses (`integrations.verl`).

    from sgpo_data.integrations.trl import SGPOReward
    trainer = GRPOTrainer(model=..., reward_funcs=[SGPOReward(judge="cascade")], train_dataset=prompts_view, ...)

TRL samples `num_generations` completions per prompt and calls the reward function with the batch's prompts and
completions and the dataset's columns. `SGPOReward` grades each completion against the reference answer column
(`solution`, the name TRL's own `accuracy_reward` reads) with the same grader as the offline pipeline, then hands
the rows to the judging core (`judges.core`, the judge stage's own: segmenter, scope, judge, options), and returns
the SGPO reward: 1 for a right answer, partial credit for a judged wrong one, 0 otherwise (`score:` options decide
the map). TRL then computes the group advantages, so an all-negative group whose responses went wrong at
different steps gets a reward spread and a gradient.

`__call__` is `async`: TRL awaits it on its event loop without blocking, and the calls of every caller (TRL,
verl's concurrent `compute_score` calls, `rewards`) go through one micro-batcher (`integrations.batcher`), which
judges the rows of calls that arrive together as one batch on one thread: the engine is never used by two calls
at once.

Failures inside a trainer: a judge request that fails gives its response the plain outcome reward and is counted
(`sgpo/judge_failures`); a judge service that is down raises its one-line error in the call, so the training
step fails loudly. Each TRL call logs `sgpo/all_negative_groups`, `sgpo/all_negative_groups_with_spread` and
`sgpo/judge_failures` through TRL's `log_metric`.

Judges that sample from the policy (`mc`) sample from the model being trained: pass `policy=` (a `Backend`, or a
function that loads one), or call `reward.attach(trainer)` once the GRPOTrainer is built. Without either they
refuse at the first call that needs them; they never sample from the judge's engine.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from sgpo_data.backends.base import Backend
from sgpo_data.config import JudgeConfig, ScoreConfig, validate_options
from sgpo_data.errors import SgpoError
from sgpo_data.graders import get_grader
from sgpo_data.integrations.batcher import MicroBatcher
from sgpo_data.judges import Verdict
from sgpo_data.judges.core import Judging, Row
from sgpo_data.schema import JudgeStatus
from sgpo_data.scoring import score_table


def _text(message) -> str:
    """A completion or prompt as text: a plain string, or the content of a chat's last message."""
    if isinstance(message, str):
        return message
    return message[-1]["content"] if message else ""


@dataclass(frozen=True)
class Scored:
    """One response's reward, with its outcome grade and verdict (None: not judged)."""

    reward: float
    correct: bool
    verdict: Verdict | None

    @property
    def judge_failed(self) -> bool:
        return self.verdict is not None and self.verdict.status == JudgeStatus.ERROR


class SGPOReward:
    """A TRL reward function (`prompts`, `completions`, dataset columns as keyword arguments → one float each).

    `judge`: a judge name or a `judge:` section (dict or `JudgeConfig`: name, options, backend, model, segmenter,
    scope, ...); its engine loads at the first request (`engine`: one already loaded). `score`: the `score:`
    section. `grader`/`grader_options`: as in a recipe. `answer_column` holds the reference answer,
    `solution_column` the reference solution (optional). `policy`: the trained policy's engine, for mc.
    `cache`: a call-cache file, so a verdict asked once is never paid for again. `window_s`/`max_batch`: how
    the micro-batcher gathers concurrent calls."""

    __name__ = "sgpo_reward"  # TRL names a reward function's metrics after it

    def __init__(self, judge: str | dict | JudgeConfig = "arith", score: dict | ScoreConfig | None = None,
                 grader: str = "math_verify", grader_options: dict | None = None, answer_column: str = "solution",
                 solution_column: str = "reference_solution", engine: Backend | None = None,
                 policy: Backend | None = None, cache: str | Path | None = None, window_s: float = 0.02,
                 max_batch: int = 4096):
        if isinstance(judge, str):
            judge = {"name": judge}
        self.judge_config = judge if isinstance(judge, JudgeConfig) else validate_options(JudgeConfig, judge, "judge")
        self.score_config = score if isinstance(score, ScoreConfig) else validate_options(ScoreConfig, score or {}, "score")
        self.answer_column, self.solution_column = answer_column, solution_column
        self._policy = policy
        self.judging = Judging(self.judge_config, engine, policy=self._policy_engine)
        self.grader = get_grader(grader, grader_options or {})
        self._cache_path = Path(cache) if cache is not None else None
        self._cache = None
        self.batcher = MicroBatcher(self._score, window_s, max_batch)
        self._calls = itertools.count()
        self.judge_failures = 0  # judge requests that failed over the reward's life (their rows got the outcome)
        self.last: dict = {}  # the last call's rows and counts, for inspection

    @property
    def judge(self):
        return self.judging.judge

    def attach(self, trainer) -> SGPOReward:
        """Sample mc's continuations from `trainer`'s policy (a TRL GRPOTrainer): its model as it trains, through
        the transformers engine, whether or not TRL generates its rollouts with vLLM."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = copy.copy(trainer.processing_class)  # the engine pads on the left; the trainer's stays as it is
        self._policy = _training_policy().from_loaded(model, tokenizer, getattr(model, "name_or_path", "policy"),
                                                   str(model.device))
        return self

    def _policy_engine(self) -> Backend:
        if self._policy is None:
            raise SgpoError(f"judge {self.judge_config.name}: mc samples continuations from the policy being "
                            f"trained; pass SGPOReward(policy=...) or call reward.attach(trainer) after building "
                            f"the trainer (it never samples from the judge's engine)")
        return self._policy() if callable(self._policy) and not isinstance(self._policy, Backend) else self._policy

    async def __call__(self, prompts, completions, completion_ids=None, log_metric=None, **columns) -> list[float]:
        answers = columns.get(self.answer_column)
        if answers is None:
            raise KeyError(f"SGPOReward: the dataset has no {self.answer_column!r} column (the reference answer); "
                           f"use the `prompts` view or pass answer_column=")
        call = next(self._calls)  # a call is a whole batch: its groups are its own
        groups = [(call, json.dumps(p, sort_keys=True) if not isinstance(p, str) else p) for p in prompts]
        problems = columns.get("problem") or [_text(p) for p in prompts]
        solutions = columns.get(self.solution_column) or [None] * len(prompts)
        rows = [Row(problem, _text(c), None if a is None else str(a), s, g, prompt=list(p) if not isinstance(p, str)
                    else None) for problem, c, a, s, g, p in zip(problems, completions, answers, solutions, groups,
                                                                  prompts)]
        scored = await self.batcher.acall(rows)
        self._remember(rows, scored)
        if log_metric is not None:
            for name in ("all_negative_groups", "all_negative_groups_with_spread", "judge_failures"):
                log_metric(f"sgpo/{name}", float(self.last[name]))
        return [s.reward for s in scored]

    def rewards(self, texts: list[str], answers: list[str | None], groups: list, problems: list[str],
                solutions: list[str | None] | None = None, prompts: list | None = None) -> list[float]:
        """SGPO rewards of responses `texts`; `groups` says which responses answer the same prompt."""
        n = len(texts)
        solutions, prompts = solutions or [None] * n, prompts or [None] * n
        rows = [Row(problems[i], texts[i], answers[i], solutions[i], groups[i], prompt=prompts[i]) for i in range(n)]
        scored = self.batcher(rows)
        self._remember(rows, scored)
        return [s.reward for s in scored]

    def score_rows(self, rows: list[Row]) -> list[Scored]:
        """The rows' rewards through the micro-batcher (rows of one group must come in one call)."""
        return self.batcher(rows)

    async def ascore_rows(self, rows: list[Row]) -> list[Scored]:
        return await self.batcher.acall(rows)

    def _remember(self, rows: list[Row], scored: list[Scored]) -> None:
        rewards = [s.reward for s in scored]
        negative = {r.group for r in rows} - {r.group for r, s in zip(rows, scored) if s.correct}
        spread = {g for g in negative if np.ptp([s.reward for r, s in zip(rows, scored) if r.group == g]) > 0}
        self.last = {"rewards": rewards, "correct": [s.correct for s in scored],
                     "verdicts": [s.verdict for s in scored], "all_negative_groups": len(negative),
                     "all_negative_groups_with_spread": len(spread),
                     "judge_failures": sum(s.judge_failed for s in scored)}

    def _score(self, rows: list[Row]) -> list[Scored]:
        """One batch (the micro-batcher's thread): grade, judge through the core, score."""
        graded = self.grader.grade([r.response for r in rows], [r.reference_answer for r in rows])
        rows = [Row(r.problem, r.response, r.reference_answer, r.reference_solution, r.group, g.is_correct is True,
                    r.prompt) for r, g in zip(rows, graded)]
        if self._cache is None and self._cache_path is not None:
            from sgpo_data.pipeline.cache import CallCache

            self._cache = CallCache(self._cache_path)
        job = self.judging.job(rows, self._cache)
        for _ in self.judging.stream([job]):
            pass
        if self._cache is not None:
            self._cache.flush()
        verdicts = job.ordered()
        table = pa.table({
            "prompt_id": [json.dumps(r.group, default=str) for r in rows],
            "is_correct": [r.correct for r in rows],
            "steps": job.steps_column,
            "first_error_step": pa.array([v.first_error_step if v else None for v in verdicts], pa.int32()),
            "judge_status": [v.status if v else JudgeStatus.SKIPPED_CORRECT for v in verdicts],
        })
        rewards = score_table(table, self.score_config)["reward"].to_numpy(zero_copy_only=False)
        rewards = np.nan_to_num(rewards.astype(np.float64), nan=0.0)
        scored = [Scored(float(x), r.correct, v) for x, r, v in zip(rewards, rows, verdicts)]
        self.judge_failures += sum(s.judge_failed for s in scored)
        return scored

    def close(self) -> None:
        self.batcher.close()
        self.judging.close()
        self.grader.close()
        if self._cache is not None:
            self._cache.close()


def _training_policy():
    from sgpo_data.backends.transformers_backend import TransformersBackend

    class TrainingPolicy(TransformersBackend):
        """The trainer's model as an engine: sampled in eval mode, then put back in the mode it was in."""

        def generate_batch(self, requests):
            training = self.model.training
            self.model.eval()
            try:
                return super().generate_batch(requests)
            finally:
                self.model.train(training)

    return TrainingPolicy
