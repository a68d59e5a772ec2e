"""An LLM as step judge, through any backend. The prompt lives in `templates/first_error.txt`.

With a backend that can constrain its answer (transformers: likelihood of each allowed answer; vLLM: guided
choice), the reply is always one of -1..K-1; otherwise the judge generates greedily and the reply is parsed
strictly, a bad reply becoming `parse_error` with the raw text kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from string import Template

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.backends.base import Backend, Choice, Request, Result, SamplingParams
from sgpo_data.judges.base import Judge, JudgeInput, Verdict
from sgpo_data.judges.parse import parse_first_error
from sgpo_data.outcomes import RequestError


class LLMJudgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    constrained: bool = Field(True, description="restrict the answer to -1..K-1 where the backend allows it")
    max_new_tokens: int = Field(16, ge=1, description="answer budget when the judge generates freely")


def load_template(name: str = "first_error.txt") -> Template:
    return Template(resources.files("sgpo_data.judges").joinpath("templates", name).read_text())


# Tag-like text: <system>, </b>, <br/>, and any spelling of a step tag (< step_1 >, </STEP 2>); "x < y and z > 2"
# is not a tag (no name right after "<").
_TAG_RE = re.compile(r"</?[A-Za-z_][\w:.-]*(?:\s[^<>\n]*)?/?>|<\s*/?\s*step[^<>\n]*>", re.IGNORECASE)
_HEADING_RE = re.compile(r"^([^\S\n]*)(#+)", re.MULTILINE)  # "## Task" at a line start


def neutralise(text: str) -> str:
    """A response's text made unable to forge the prompt's structure: tag-like text gets look-alike angle
    brackets (‹step_1›) and a line-leading Markdown heading is escaped (\\## Task), so the judge sees exactly
    the steps the segmenter made and only the template's own sections."""
    text = _TAG_RE.sub(lambda m: m.group(0).replace("<", "\u2039").replace(">", "\u203a"), text)
    return _HEADING_RE.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def render_prompt(template: Template, item: JudgeInput) -> str:
    steps = "\n\n".join(f"<step_{i}>\n{neutralise(step.strip())}\n</step_{i}>" for i, step in enumerate(item.steps))
    return template.substitute(
        problem=item.problem.strip(),
        reference_solution=(item.reference_solution or "(none given)").strip(),
        steps=steps,
        last_step=len(item.steps) - 1,
    )


class LLMJudge(Judge):
    def __init__(self, engine: Callable[[], Backend], options: LLMJudgeOptions | None = None):
        super().__init__(engine)
        self.options = options or LLMJudgeOptions()
        self.max_new_tokens = self.options.max_new_tokens
        self.template = load_template()

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def constrained(self) -> bool:
        return self.options.constrained and self.backend.supports_choice

    def conversation(self, item: JudgeInput) -> list[dict[str, str]]:
        return [{"role": "user", "content": render_prompt(self.template, item)}]

    def request(self, item: JudgeInput) -> Request:
        if self.constrained:
            return Request(self.conversation(item), choices=[str(i) for i in range(-1, len(item.steps))])
        return Request(self.conversation(item), SamplingParams(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens))

    def verdict(self, item: JudgeInput, result: Result) -> Verdict:
        if isinstance(result, RequestError):
            return Verdict.failed(result)
        if isinstance(result, Choice):
            raw, completion_tokens = str(result.index - 1), result.completion_tokens  # choices are -1..K-1
        else:
            raw = result.completions[0].text if result.completions else None
            completion_tokens = sum(c.num_tokens for c in result.completions)
        return replace(parse_first_error(raw, len(item.steps)), prompt_tokens=result.prompt_tokens,
                       completion_tokens=completion_tokens)
