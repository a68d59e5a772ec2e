"""The `noisy` judge: another judge whose first-error steps are replaced, with probability `p`, by a random step.

An ablation, not a judge to build data with: it answers whether a weaker judge erases SGPO's gain. Each row's
coin and replacement step are drawn from a hash of `seed` and the row's identity, so a rerun (or another order of
the rows) perturbs the same rows the same way. Only usable verdicts (status ok, a step) are perturbed; the
replacement is uniform over the response's steps 0..K-1 (a wrong response has an error somewhere).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.errors import SgpoError
from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Task, Verdict
from sgpo_data.schema import JudgeStatus


class NoisyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    judge: str = Field("arith", description="the judge whose verdicts are perturbed")
    options: dict = Field({}, description="that judge's own options")
    p: float = Field(0.5, ge=0.0, le=1.0, description="probability that a verdict's step is replaced")
    seed: int = Field(0, description="seed of the coin flips and replacement steps")


class NoisyJudge(Judge):
    def __init__(self, inner: Judge, p: float, seed: int):
        super().__init__()
        self.inner, self.p, self.seed = inner, p, seed

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def backend(self):
        return self.inner.backend

    @property
    def columns(self) -> tuple[str, ...]:
        return self.inner.columns

    @property
    def grouped(self) -> bool:
        return self.inner.grouped

    @property
    def caches_decisions(self) -> bool:
        return self.inner.caches_decisions

    def identity(self) -> dict:
        return {"inner": self.inner.identity()}

    def loaded_model_name(self) -> str | None:
        return self.inner.loaded_model_name()

    def perturb(self, item: JudgeInput, verdict: Verdict | None) -> Verdict | None:
        if verdict is None or verdict.status != JudgeStatus.OK or verdict.first_error_step is None or not item.steps:
            return verdict
        key = json.dumps([self.seed, item.identity()], sort_keys=True, default=str).encode()
        digest = hashlib.sha256(key).digest()
        coin = int.from_bytes(digest[:8], "big") / 2**64
        if coin >= self.p:
            return verdict
        step = int.from_bytes(digest[8:16], "big") % len(item.steps)
        raw = f"{verdict.raw or ''}\n[noisy p={self.p}: step {verdict.first_error_step} replaced by {step}]"
        return replace(verdict, first_error_step=step, raw=raw.lstrip("\n"))

    def decide_many(self, items: list[JudgeInput]) -> list[Verdict | None]:
        return [self.perturb(item, v) for item, v in zip(items, self.inner.decide_many(items))]

    def tasks(self, items, groups) -> list[Task]:
        return [replace(task, session=self._session(task.session, [items[row] for row in task.rows]))
                for task in self.inner.tasks(items, groups)]

    def _session(self, session, items: list[JudgeInput]):
        verdicts = yield from session
        return [self.perturb(item, v) for item, v in zip(items, verdicts)]

    def close(self) -> None:
        self.inner.close()


@JUDGES.register("noisy", options=NoisyOptions)
def _noisy(engine, options: NoisyOptions, policy=None) -> Judge:
    """Another judge with its verdicts replaced at random with probability p: a judge of known quality."""
    from sgpo_data.judges import get_judge

    if options.judge == "noisy":
        raise SgpoError("judge.options.judge: a noisy judge cannot wrap another noisy judge")
    JUDGES.check(options.judge, "judge.options.judge")
    inner = get_judge(options.judge, engine, options.options, "judge.options.options", policy)
    return NoisyJudge(inner, options.p, options.seed)
