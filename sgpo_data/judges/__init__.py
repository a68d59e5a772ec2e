"""Step judges, chosen by name: `get_judge("llm", backend=...)`."""

from sgpo_data.judges.base import Judge, JudgeInput, Verdict
from sgpo_data.judges.parse import parse_first_error
from sgpo_data.registry import Registry

JUDGES: Registry[Judge] = Registry("judge")


@JUDGES.register("llm")
def _llm(**kwargs) -> Judge:
    from sgpo_data.judges.llm_judge import LLMJudge

    return LLMJudge(**kwargs)


def get_judge(name: str, **kwargs) -> Judge:
    return JUDGES.get(name, **kwargs)


__all__ = ["JUDGES", "Judge", "JudgeInput", "Verdict", "get_judge", "parse_first_error"]
