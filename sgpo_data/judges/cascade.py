"""The `cascade` judge: judges in order, e.g. `arith` then `llm`; the first that finds an error decides."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.errors import SgpoError
from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Verdict


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

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(column for judge in self.judges for column in judge.columns)

    @property
    def grouped(self) -> bool:
        return self.last.grouped

    @property
    def caches_decisions(self) -> bool:
        return any(judge.caches_decisions for judge in self.judges)

    def identity(self) -> dict:
        return {str(i): judge.identity() for i, judge in enumerate(self.judges)}

    def decide(self, item: JudgeInput) -> Verdict | None:
        return self.decide_many([item])[0]

    def decide_many(self, items: list[JudgeInput]) -> list[Verdict | None]:
        verdicts: list[Verdict | None] = [None] * len(items)
        pending = list(range(len(items)))
        for judge in self.judges[:-1]:
            still = []
            for i, verdict in zip(pending, judge.decide_many([items[i] for i in pending])):
                if verdict is not None and verdict.first_error_step is not None and verdict.first_error_step >= 0:
                    verdicts[i] = verdict
                else:
                    still.append(i)
            pending = still
        for i, verdict in zip(pending, self.last.decide_many([items[i] for i in pending])):
            verdicts[i] = verdict
        return verdicts

    def tasks(self, items, groups):
        return self.last.tasks(items, groups)

    def loaded_model_name(self) -> str | None:
        return self.last.loaded_model_name()

    def request(self, item: JudgeInput):
        return self.last.request(item)

    def verdict(self, item: JudgeInput, result) -> Verdict:
        return self.last.verdict(item, result)

    def close(self) -> None:
        for judge in self.judges:
            judge.close()


@JUDGES.register("cascade", options=CascadeOptions)
def _cascade(engine, options: CascadeOptions, policy=None) -> Judge:
    """Judges in order; the first that finds an error decides (cheap local checks before an LLM)."""
    from sgpo_data.judges import get_judge

    judges = []
    for position, name in enumerate(options.judges):
        if name == "cascade":
            raise SgpoError("judge.options.judges: a cascade cannot contain a cascade")
        JUDGES.check(name, f"judge.options.judges[{position}]")
        judges.append(get_judge(name, engine, options.options.get(name), f"judge.options.options.{name}", policy))
    for name, judge in zip(options.judges[:-1], judges[:-1]):
        if type(judge).decide is Judge.decide:
            raise SgpoError(f"judge.options.judges: {name!r} needs an engine, so it can only be the last judge of a "
                            f"cascade; put the local checks (arith) first")
    return CascadeJudge(judges)
