"""The `mc` judge: reference-free Monte-Carlo labels in the style of Math-Shepherd (Wang et al., 2024).

From the prefix of a response that ends after step i, the policy samples `samples` continuations; each is graded
against the reference answer. A prefix that never reaches the answer holds an error, and the first such step is the
first error. Assuming a step that can still reach the answer has only right steps before it, a binary search over
the steps finds it in about log2(K) rounds of sampling instead of K:

- a wrong response's last prefix (the whole response) is known to fail, so the search runs over steps 0..K-1;
- a response whose own answer is right gets -1 without any sampling;
- a response of one step has its error in step 0, also without sampling.

The labels are only as good as the policy: a problem the policy never solves from scratch puts every error at
step 0. `raw` keeps the success rate of every probed prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.backends.base import Backend, Request, SamplingParams
from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Session, Verdict
from sgpo_data.outcomes import ErrorKind, RequestError
from sgpo_data.schema import JudgeStatus


class MCOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: int = Field(4, ge=1, description="continuations sampled from each probed prefix (k)")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature of the continuations")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling threshold of the continuations")
    max_new_tokens: int = Field(256, ge=1, description="length budget of a continuation")
    seed: int = Field(0, description="sampling seed of the continuations")
    grader: str = Field("math_verify", description="grader of the continuations' answers")
    grader_options: dict = Field({}, description="the grader's own options")


class MCJudge(Judge):
    """Samples through the policy's engine (`policy`, else the judge's own)."""

    def __init__(self, engine: Callable[[], Backend] | None, options: MCOptions | None = None):
        super().__init__(engine)
        self.options = options or MCOptions()
        self._grader = None

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def grader(self):
        if self._grader is None:
            from sgpo_data.graders import get_grader

            self._grader = get_grader(self.options.grader, self.options.grader_options, "judge.options.grader_options")
        return self._grader

    def grade(self, texts: list[str], answer: str) -> list[bool]:
        return [bool(r.is_correct) for r in self.grader.grade(texts, [answer] * len(texts))]

    def session(self, item: JudgeInput) -> Session:
        if item.reference_answer is None:
            return [Verdict(None, JudgeStatus.ERROR, None, ErrorKind.BAD_REQUEST,
                            "the mc judge needs the row's reference answer; this row has none")]
        if self.grade(["".join(item.steps)], item.reference_answer)[0]:
            return [Verdict(-1, JudgeStatus.OK, json.dumps({"response_correct": True}))]
        options, opening = self.options, item.prompt or [{"role": "user", "content": item.problem}]
        params = SamplingParams(n=options.samples, temperature=options.temperature, top_p=options.top_p,
                                max_new_tokens=options.max_new_tokens, seed=options.seed)
        rates: dict[int, float] = {}
        low, high = 0, len(item.steps) - 1  # the first failing prefix lies in low..high; high is known to fail
        while low < high:
            middle = (low + high) // 2
            prefix = "".join(item.steps[: middle + 1])
            result = yield Request(opening + [{"role": "assistant", "content": prefix}], params, options.seed)
            if isinstance(result, RequestError):
                return [Verdict.failed(result)]
            hits = self.grade([prefix + c.text for c in result.completions], item.reference_answer)
            rates[middle] = sum(hits) / max(1, len(hits))
            low, high = (middle + 1, high) if any(hits) else (low, middle)
        return [Verdict(high, JudgeStatus.OK, json.dumps({"success_rate_by_step": rates}))]

    def close(self) -> None:
        if self._grader is not None:
            self._grader.close()
        super().close()


@JUDGES.register("mc", options=MCOptions)
def _mc(engine, options: MCOptions, policy=None) -> Judge:
    """Monte-Carlo: continuations sampled from each prefix; the first prefix that cannot reach the answer is the
    error."""
    return MCJudge(policy or engine, options)
