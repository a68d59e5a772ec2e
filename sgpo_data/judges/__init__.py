"""Step judges, chosen by name: `get_judge("llm", backend=...)`."""

from sgpo_data.judges.base import Judge, JudgeInput, Verdict
from sgpo_data.judges.llm_judge import LLMJudgeOptions
from sgpo_data.judges.parse import parse_first_error
from sgpo_data.registry import Registry

JUDGES: Registry[Judge] = Registry("judge")


@JUDGES.register("llm", options=LLMJudgeOptions)
def _llm(backend, options: LLMJudgeOptions) -> Judge:
    from sgpo_data.judges.llm_judge import LLMJudge

    return LLMJudge(backend, options)


def get_judge(name: str, backend=None, options: dict | None = None, key: str = "judge.options") -> Judge:
    """The judge `name` on `backend`, its options validated by the judge's own model."""
    return JUDGES.get(name, backend=backend, options=JUDGES.options(name, options, key))


__all__ = ["JUDGES", "Judge", "JudgeInput", "Verdict", "get_judge", "parse_first_error"]
