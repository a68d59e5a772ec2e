"""The `prm` judge: a process reward model (PRM) scores every step of a response, with no engine and no prompt.

The PRM reads the chat Qwen2.5-Math-PRM was trained on: the system prompt, the problem as the user turn, and the
steps as the assistant turn, each followed by the step separator (`<extra_0>`). At every separator it gives two
class logits; the softmax's class 1 is the probability that the step is correct. The first step whose probability
is below `threshold` is the first error; -1 when none is. The probabilities, rounded, are kept in `judge_raw`.

The model is loaded at the first verdict: with `AutoModelForTokenClassification` when its config names a
`...ForTokenClassification` architecture, else with `AutoModel` (a remote-code PRM such as
Qwen/Qwen2.5-Math-PRM-7B, with `trust_remote_code: true`). Either must give per-token logits of shape
[batch, tokens, 2] (`.logits`, or the first element of a tuple). An input that cannot be scored (longer than
`max_length`, or whose separators do not match its steps) is a row error, not a crash.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.errors import SgpoError
from sgpo_data.judges.base import JUDGES, Judge, JudgeInput, Verdict
from sgpo_data.outcomes import ErrorKind
from sgpo_data.schema import JudgeStatus

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class PRMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="local folder or Hub id of a process reward model, e.g. "
                       "Qwen/Qwen2.5-Math-PRM-7B")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="the first step whose probability of being correct "
                             "is below this is the first error")
    step_separator: str = Field("<extra_0>", min_length=1, description="the token placed after every step, the one "
                                "the PRM scores (Qwen2.5-Math-PRM: <extra_0>); must be one token of its tokenizer")
    system_prompt: str = Field(QWEN_PRM_SYSTEM, description="the system turn of the scored chat "
                               "(Qwen2.5-Math-PRM's own by default)")
    device: str = Field("auto", description="auto: cuda when available, else cpu; or cpu, cuda, cuda:1, mps")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(None, description="None: bf16 on GPU, fp32 on "
                                                                    "CPU")
    trust_remote_code: bool = Field(False, description="run the model's own code from its folder or the Hub "
                                    "(needed by Qwen2.5-Math-PRM)")
    batch_size: int = Field(8, ge=1, description="responses per forward pass")
    max_length: int | None = Field(None, ge=1, description="longest input in tokens; a longer one is a row error. "
                                   "None: the model's max_position_embeddings, if its config has one")


def first_below(probabilities: list[float], threshold: float) -> int:
    """The index of the first probability below `threshold`; -1 when there is none."""
    return next((k for k, p in enumerate(probabilities) if p < threshold), -1)


class PRMJudge(Judge):
    """The `prm` judge: decides every item locally with a process reward model, loaded at the first verdict."""

    caches_decisions = True  # a forward pass per row: a rerun reads the verdicts back instead

    def __init__(self, options: PRMOptions):
        super().__init__()
        self.options = options
        self.model_name = options.model
        self.model = self.tokenizer = None
        self.device, self.separator_id, self.max_length = None, None, None

    def loaded_model_name(self) -> str | None:
        return self.options.model

    def load(self) -> None:
        """Load the tokenizer, check the separator, then load the model (once)."""
        if self.model is not None:
            return
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from sgpo_data.backends.models import resolve_model

        hf_logging.disable_progress_bar()
        opts, spec = self.options, self.options.model
        if spec.endswith(".gguf"):
            raise SgpoError(f"judge.options.model: {spec} is a .gguf file; a PRM loads from a model folder or Hub id")
        try:
            path, _ = resolve_model(spec)
        except SgpoError as exc:
            raise SgpoError(f"judge.options.model: {exc}") from None
        device = opts.device if opts.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, opts.dtype) if opts.dtype else (torch.bfloat16 if device != "cpu" else torch.float32)
        remote = opts.trust_remote_code
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
            separator = tokenizer.encode(opts.step_separator, add_special_tokens=False)
            if len(separator) != 1:
                raise SgpoError(f"judge.options.step_separator: {opts.step_separator!r} is {len(separator)} tokens "
                                f"in the tokenizer of {spec!r}, not one; use the token the PRM scores after each "
                                f"step (Qwen2.5-Math-PRM: <extra_0>)")
            if not tokenizer.chat_template:
                raise SgpoError(f"judge.options.model: {spec!r} has no chat template; a PRM scores a chat "
                                f"(system, problem, steps)")
            config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
            token_classifier = any(a.endswith("ForTokenClassification") for a in config.architectures or [])
            auto = AutoModelForTokenClassification if token_classifier else AutoModel
            model = auto.from_pretrained(path, dtype=dtype, trust_remote_code=remote)
        except (OSError, ValueError) as exc:
            hint = "; set judge.options.trust_remote_code=true if you trust its code" \
                if "trust_remote_code" in str(exc) else ""
            raise SgpoError(f"judge.options.model: could not load PRM {spec!r}: {str(exc).splitlines()[0]}{hint}") \
                from None
        self.tokenizer, self.separator_id, self.device = tokenizer, separator[0], device
        self.max_length = opts.max_length or getattr(config, "max_position_embeddings", None)
        self.model = model.eval().to(device)

    def text(self, item: JudgeInput) -> str:
        """The chat the PRM scores, rendered by its chat template (as on the Qwen2.5-Math-PRM model card)."""
        sep = self.options.step_separator
        messages = [
            {"role": "system", "content": self.options.system_prompt},
            {"role": "user", "content": item.problem},
            {"role": "assistant", "content": sep.join(step.strip() for step in item.steps) + sep},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def decide(self, item: JudgeInput) -> Verdict:
        return self.decide_many([item])[0]

    def decide_many(self, items: list[JudgeInput]) -> list[Verdict]:
        """One verdict per item, in order; up to `batch_size` inputs of similar length per forward pass."""
        self.load()
        verdicts: list[Verdict | None] = [None] * len(items)
        inputs: dict[int, tuple[list[int], list[int]]] = {}  # item -> (token ids, separator positions)
        seconds = [0.0] * len(items)  # each item's time: its encoding and its share of its batch's forward pass
        for i, item in enumerate(items):
            start = time.perf_counter()
            if not item.steps:
                verdicts[i] = Verdict(-1, JudgeStatus.OK, "[]", judge=self.options.model)
                continue
            ids = self.tokenizer(self.text(item), add_special_tokens=False).input_ids
            positions = [t for t, token in enumerate(ids) if token == self.separator_id]
            if self.max_length is not None and len(ids) > self.max_length:
                verdicts[i] = self._bad_request(
                    f"PRM input is {len(ids)} tokens, longer than {self.max_length} (judge.options.max_length); "
                    f"raise judge.options.max_length if the model allows it, or generate shorter responses")
            elif len(positions) != len(item.steps):
                verdicts[i] = self._bad_request(self._mismatch(item, len(positions)))
            else:
                inputs[i] = ids, positions
            seconds[i] = time.perf_counter() - start
        by_length = sorted(inputs, key=lambda i: len(inputs[i][0]))
        size = self.options.batch_size
        for start in range(0, len(by_length), size):
            chunk = by_length[start:start + size]
            began = time.perf_counter()
            scored = self._step_probabilities([inputs[i] for i in chunk])
            share = (time.perf_counter() - began) / len(chunk)
            for i, probabilities in zip(chunk, scored):
                raw = json.dumps([round(p, 4) for p in probabilities], separators=(",", ":"))
                verdicts[i] = Verdict(first_below(probabilities, self.options.threshold), JudgeStatus.OK, raw,
                                      judge=self.options.model)
                seconds[i] += share
        return [replace(v, seconds=t) for v, t in zip(verdicts, seconds)]

    def _step_probabilities(self, batch: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """P(step correct) at the separator positions of each input: one right-padded forward pass."""
        import torch

        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)  # masked out: any id will do
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch], device=self.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch], device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=mask)
            logits = out.logits if hasattr(out, "logits") else out[0]
            if logits.dim() != 3 or logits.shape[-1] != 2:
                raise SgpoError(f"judge.options.model: {self.options.model!r} gives outputs of shape "
                                f"{list(logits.shape)}, not per-token logits [batch, tokens, 2]; use a process "
                                f"reward model (e.g. Qwen/Qwen2.5-Math-PRM-7B)")
            correct = torch.softmax(logits.float(), dim=-1)[..., 1].cpu()
        return [correct[r, positions].tolist() for r, (_, positions) in enumerate(batch)]

    def _mismatch(self, item: JudgeInput, found: int) -> str:
        sep = self.options.step_separator
        where = next((f"step {k}" for k, step in enumerate(item.steps) if sep in step), None)
        where = where or ("the problem" if sep in item.problem else None)
        where = where or ("judge.options.system_prompt" if sep in self.options.system_prompt else None)
        if where:
            return (f"{where} contains the step separator {sep!r} (judge.options.step_separator), so the PRM input "
                    f"has {found} separators for {len(item.steps)} steps; remove that text from the data")
        return (f"the PRM input has {found} step separators {sep!r} for {len(item.steps)} steps (the chat template "
                f"or tokenizer changed them); set judge.options.step_separator to a special token of the PRM")

    def _bad_request(self, message: str) -> Verdict:
        return Verdict(None, JudgeStatus.ERROR, None, ErrorKind.BAD_REQUEST, message, judge=self.options.model)

    def close(self) -> None:
        self.model = None


@JUDGES.register("prm", options=PRMOptions)
def _prm(engine, options: PRMOptions, policy=None) -> Judge:
    """A process reward model scores every step; the first below the threshold is the error."""
    return PRMJudge(options)
