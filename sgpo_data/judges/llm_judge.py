"""An LLM as step judge, through any backend. The prompt lives in `templates/first_error.txt`.

With a backend that can constrain its answer (transformers: likelihood of each allowed answer; vLLM: guided
choice), the reply is always one of -1..K-1; otherwise the judge generates greedily and the reply is parsed
strictly, a bad reply becoming `parse_error` with the raw text kept.
"""

from __future__ import annotations

from importlib import resources
from string import Template

from sgpo_data.backends import Backend, SamplingParams
from sgpo_data.judges.base import Judge, JudgeInput, Verdict
from sgpo_data.judges.parse import parse_first_error
from sgpo_data.schema import JudgeStatus


def load_template(name: str = "first_error.txt") -> Template:
    return Template(resources.files("sgpo_data.judges").joinpath("templates", name).read_text())


def render_prompt(template: Template, item: JudgeInput) -> str:
    steps = "\n\n".join(f"<step_{i}>\n{step.strip()}\n</step_{i}>" for i, step in enumerate(item.steps))
    return template.substitute(
        problem=item.problem.strip(),
        reference_solution=(item.reference_solution or "(none given)").strip(),
        steps=steps,
        last_step=len(item.steps) - 1,
    )


class LLMJudge(Judge):
    def __init__(self, backend: Backend, constrained: bool = True, max_new_tokens: int = 16, batch_size: int = 8):
        self.backend = backend
        self.model_name = backend.model_name
        self.constrained = constrained and backend.supports_choice
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.template = load_template()

    def conversation(self, item: JudgeInput) -> list[dict[str, str]]:
        return [{"role": "user", "content": render_prompt(self.template, item)}]

    def judge(self, items: list[JudgeInput]) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start : start + self.batch_size]
            try:
                raws = self._answers(batch)
            except Exception as exc:  # an engine failure marks these rows, the stage goes on
                verdicts += [Verdict(None, JudgeStatus.ERROR, f"{type(exc).__name__}: {exc}") for _ in batch]
                continue
            verdicts += [parse_first_error(raw, len(item.steps)) for raw, item in zip(raws, batch)]
        return verdicts

    def _answers(self, batch: list[JudgeInput]) -> list[str]:
        conversations = [self.conversation(item) for item in batch]
        if self.constrained:
            choices = [[str(i) for i in range(-1, len(item.steps))] for item in batch]
            picks = self.backend.choose(conversations, choices)
            return [options[p] for options, p in zip(choices, picks)]
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens)
        return [group[0].text for group in self.backend.generate(conversations, params)]
