"""The `cascade` judge: judges in order, e.g. `arith` then `llm`; the first that finds an error decides."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.judges.base import Judge, JudgeInput, Verdict


class CascadeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    judges: list[str] = Field(["arith", "llm"], min_length=1,
                              description="judges in order; the first that finds an error decides; only the last "
                              "may need an engine")
    options: dict[str, dict] = Field({}, description="each judge's own options, by name")


class CascadeJudge(Judge):
    """Judges in order: the first that finds an error (a step >= 0) decides, so the engine judge at the end is
    asked only about responses the cheap checks passed."""

    def __init__(self, judges: list[Judge]):
        super().__init__()
        self.judges = judges
        self.last = judges[-1]

    @property
    def model_name(self) -> str:
        return self.last.model_name

    @property
    def backend(self):
        return self.last.backend

    def decide(self, item: JudgeInput) -> Verdict | None:
        for judge in self.judges[:-1]:
            verdict = judge.decide(item)
            if verdict is not None and verdict.first_error_step is not None and verdict.first_error_step >= 0:
                return verdict
        return self.last.decide(item)

    def loaded_model_name(self) -> str | None:
        return self.last.loaded_model_name()

    def request(self, item: JudgeInput):
        return self.last.request(item)

    def verdict(self, item: JudgeInput, result) -> Verdict:
        return self.last.verdict(item, result)

    def close(self) -> None:
        for judge in self.judges:
            judge.close()
