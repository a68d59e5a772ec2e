"""An LLM as step judge, through any backend.

The prompt comes from a template (`templates/`, or a file of the user's: `template`, `template_noref`). It is
reference-guided when the row has a reference solution and reference-free otherwise (`reference` forces one).
Every step is wrapped in numbered tags, and tag-like or heading-like text inside a response is neutralised, so a
response cannot forge steps or add sections of its own.

`mode: single` asks one request per response. With a backend that can constrain its answer (transformers:
likelihood of each allowed answer; vLLM: guided choice) the reply is always one of -1..K-1; otherwise the judge
generates greedily and the reply is parsed strictly, a bad reply becoming `parse_error` with the raw text kept.
`mode: group` asks one request per group: the problem and reference go in once, then every wrong response of the
group, and the reply must be one line `response_<i>: <n>` per response, in order (else every row of the group
is a parse error). With vLLM (server or offline) the reply is constrained to that format by a regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.backends.base import Backend, Choice, Request, Result, SamplingParams
from sgpo_data.errors import SgpoError
from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Session, Task, Verdict
from sgpo_data.judges.parse import parse_first_error, parse_group
from sgpo_data.outcomes import RequestError


class LLMJudgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    constrained: bool = Field(True, description="restrict the answer to -1..K-1 where the backend allows it "
                              "(single mode: likelihood or guided choice; group mode: a regular expression, with "
                              "vLLM)")
    max_new_tokens: int = Field(16, ge=1, description="answer budget when the judge generates freely; in group mode "
                                "per response")
    reference: bool | None = Field(None, description="judge against the reference solution (True), without it "
                                   "(False), or with it whenever the row has one (None)")
    mode: Literal["single", "group"] = Field("single", description="one request per response, or one per group of "
                                             "a prompt's judged responses")
    template: str | None = Field(None, description="a prompt template file used with a reference solution "
                                 "(None: the shipped one)")
    template_noref: str | None = Field(None, description="a prompt template file used without one")


# The placeholders each template must hold (it may also use the optional ones).
REQUIRED = {
    ("single", True): {"problem", "reference_solution", "steps"},
    ("single", False): {"problem", "steps"},
    ("group", True): {"problem", "reference_solution", "responses"},
    ("group", False): {"problem", "responses"},
}
OPTIONAL = {"single": {"last_step"}, "group": {"count", "example"}}
SHIPPED = {("single", True): "first_error.txt", ("single", False): "first_error_noref.txt",
           ("group", True): "first_error_group.txt", ("group", False): "first_error_group_noref.txt"}


def load_template(name: str = "first_error.txt", path: str | None = None, mode: str = "single",
                  reference: bool = True, key: str = "judge.options.template") -> Template:
    """A shipped template by name, or the user's file at `path`, checked for its placeholders."""
    if path is None:
        return Template(resources.files("sgpo_data.judges").joinpath("templates", name).read_text())
    file = Path(path)
    if not file.is_file():
        raise SgpoError(f"{key}: template file {path} not found; give an existing text file")
    template = Template(file.read_text())
    if not template.is_valid():
        raise SgpoError(f"{key}: template {path} has a '$$' placeholder that is not a name; write a literal $ as $$$$")
    found = set(template.get_identifiers())
    if missing := REQUIRED[mode, reference] - found:
        raise SgpoError(f"{key}: template {path} lacks the placeholder(s) {', '.join('$' + m for m in sorted(missing))}"
                        f"; a {mode} template {'with' if reference else 'without'} a reference needs "
                        f"{', '.join('$' + m for m in sorted(REQUIRED[mode, reference]))}")
    if unknown := found - REQUIRED[mode, reference] - OPTIONAL[mode]:
        raise SgpoError(f"{key}: template {path} has unknown placeholder(s) {', '.join('$' + u for u in sorted(unknown))}"
                        f"; valid: {', '.join('$' + v for v in sorted(REQUIRED[mode, True] | OPTIONAL[mode]))}")
    return template


# The opening of tag-like text: <system>, </b>, <br/>, and any spelling of a step tag (< step_1 >, </STEP 2>); "x < y
# and z > 2" opens none (no name right after "<"). A match runs to the tag's ">" when it has one. No two quantifiers
# compete for the same characters, so the time stays linear in the response's length.
_TAG_RE = re.compile(r"(?:</?[A-Za-z_]|<\s*(?:/\s*)?step)[^<>\n]*>?", re.IGNORECASE)
_LINE_BREAKS = r"\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029"  # where str.splitlines ends a line
_HEADING_RE = re.compile(rf"(?:^|(?<=[{_LINE_BREAKS}]))([^\S{_LINE_BREAKS}]*)(#+)")  # "## Task" at a line start


def neutralise(text: str) -> str:
    """A response's text made unable to forge the prompt's structure: tag-like text gets look-alike angle
    brackets (‹step_1›) and a line-leading Markdown heading is escaped (\\## Task), so the judge sees exactly
    the steps the segmenter made and only the template's own sections. Every opening of a tag is turned, closed
    or not: turning only whole tags would let a tag that held one ("<step_1 <b> >") form again around it."""
    text = _TAG_RE.sub(lambda m: m.group(0).replace("<", "\u2039").replace(">", "\u203a"), text)
    return _HEADING_RE.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def tagged_steps(steps: list[str]) -> str:
    return "\n\n".join(f"<step_{i}>\n{neutralise(step.strip())}\n</step_{i}>" for i, step in enumerate(steps))


def render_prompt(template: Template, item: JudgeInput) -> str:
    return template.substitute(
        problem=item.problem.strip(),
        reference_solution=(item.reference_solution or "(none given)").strip(),
        steps=tagged_steps(item.steps),
        last_step=len(item.steps) - 1,
    )


def render_group_prompt(template: Template, items: list[JudgeInput]) -> str:
    responses = "\n\n".join(f"<response_{j}>\n{tagged_steps(item.steps)}\n</response_{j}>" for j, item in enumerate(items))
    return template.substitute(
        problem=items[0].problem.strip(),
        reference_solution=(items[0].reference_solution or "(none given)").strip(),
        responses=responses,
        count=len(items),
        example="\n".join(f"response_{j}: {-1 if j % 2 else min(1, len(items[j].steps) - 1)}" for j in range(len(items))),
    )


def group_pattern(num_steps: list[int]) -> str:
    """The regular expression of a well-formed group reply: `response_<i>: <n>` per response, n in -1..K_i-1."""
    return "\\n".join(f"response_{j}: (?:{'|'.join(str(k) for k in range(-1, n))})" for j, n in enumerate(num_steps))


class LLMJudge(Judge):
    def __init__(self, engine: Callable[[], Backend], options: LLMJudgeOptions | None = None):
        super().__init__(engine)
        self.options = options or LLMJudgeOptions()
        self.max_new_tokens = self.options.max_new_tokens
        mode = self.options.mode
        self.templates = {
            reference: load_template(SHIPPED[mode, reference],
                                     self.options.template if reference else self.options.template_noref, mode,
                                     reference, "judge.options.template" + ("" if reference else "_noref"))
            for reference in (True, False)
        }

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def constrained(self) -> bool:
        if self.options.mode == "group":
            return self.options.constrained and self.backend.supports_pattern
        return self.options.constrained and self.backend.supports_choice

    @property
    def grouped(self) -> bool:
        return self.options.mode == "group"

    def identity(self) -> dict:
        """The template texts, so an edited template file never reuses old verdicts."""
        return {str(reference): template.template for reference, template in self.templates.items()}

    def template_for(self, item: JudgeInput) -> Template:
        reference = self.options.reference
        return self.templates[bool(item.reference_solution) if reference is None else reference]

    def conversation(self, item: JudgeInput) -> list[dict[str, str]]:
        return [{"role": "user", "content": render_prompt(self.template_for(item), item)}]

    def request(self, item: JudgeInput) -> Request:
        if self.constrained:
            return Request(self.conversation(item), choices=[str(i) for i in range(-1, len(item.steps))])
        return Request(self.conversation(item), SamplingParams(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens))

    def verdict(self, item: JudgeInput, result: Result) -> Verdict:
        """The parsed answer; its usage is added by `Sessions`, which counts every request's."""
        if isinstance(result, RequestError):
            return Verdict.failed(result)
        if isinstance(result, Choice):
            raw = str(result.index - 1)  # choices are -1..K-1
        else:
            raw = result.completions[0].text if result.completions else None
        return parse_first_error(raw, len(item.steps))

    def tasks(self, items: Mapping[Hashable, JudgeInput], groups: Mapping[Hashable, Hashable]) -> list[Task]:
        if not self.grouped:
            return super().tasks(items, groups)
        by_group: dict[Hashable, list[Hashable]] = {}
        for row in items:
            by_group.setdefault(groups[row], []).append(row)
        return [Task(rows, self.group_session([items[row] for row in rows])) for rows in by_group.values()]

    def group_session(self, items: list[JudgeInput]) -> Session:
        prompt = render_group_prompt(self.template_for(items[0]), items)
        budget = self.max_new_tokens * len(items) + 8
        pattern = group_pattern([len(item.steps) for item in items]) if self.constrained else None
        result = yield Request([{"role": "user", "content": prompt}],
                               SamplingParams(n=1, temperature=0.0, max_new_tokens=budget), pattern=pattern)
        if isinstance(result, RequestError):
            return [Verdict.failed(result) for _ in items]
        raw = result.completions[0].text if result.completions else None
        return parse_group(raw, [len(item.steps) for item in items])


@JUDGES.register("llm", options=LLMJudgeOptions)
def _llm(engine, options: LLMJudgeOptions, policy=None) -> Judge:
    """An LLM on the judge's backend names the first wrong step, guided by the reference solution."""
    return LLMJudge(engine, options)
