"""transformers on CPU or one GPU: batched sampling with behaviour log-probabilities, and answer choice by
likelihood (so even a small judge always returns one of the allowed answers). A batch is what fits in
`max_in_flight` sequences: one `model.generate` per set of sampling parameters."""

from __future__ import annotations

import hashlib
import inspect
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sgpo_data.backends.base import BACKENDS, BatchBackend, Choice, Completion, Conversation, Generation, Request
from sgpo_data.backends.chat import answer_ids, prompt_text
from sgpo_data.backends.models import load_model
from sgpo_data.errors import SgpoError


class TransformersOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str | None = Field(None, description="cpu, cuda, cuda:1, mps; None: cuda when available, else cpu")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(None, description="None: bf16 on GPU, fp32 on CPU")


def batch_seed(seeds: list[int]) -> int:
    """One torch seed for a batch: the same requests in the same batch sample the same tokens."""
    if len(seeds) == 1:
        return seeds[0]
    return int.from_bytes(hashlib.sha256(",".join(map(str, seeds)).encode()).digest()[:4], "little")


class _SampledLogprobs:
    """The behaviour log-prob of each sampled token, under the raw logits / temperature (top-p truncation not
    applied: TRL's convention), recorded as `generate` goes instead of keeping every step's logits. transformers
    hands the processors it is given the fp32 logits before its temperature and top-p warpers (after any penalty
    the model's generation config asks for, which then shapes the sampling too); the token
    sampled at one step is the last input id at the next, and the last step's is given to `finish`."""

    def __init__(self, scale: float):
        self.scale, self.steps, self._scaled = scale, [], None

    def __call__(self, input_ids, scores):
        if self._scaled is not None:
            self._take(input_ids[:, -1])
        self._scaled = scores / self.scale
        self._norm = self._scaled.logsumexp(dim=-1)
        return scores

    def _take(self, tokens) -> None:
        self.steps.append(self._scaled.gather(1, tokens.unsqueeze(1)).squeeze(1) - self._norm)

    def finish(self, tokens):
        """(sequences, steps) log-probs of `tokens`, the generated ids."""
        import torch

        self._take(tokens[:, -1])
        return torch.stack(self.steps, dim=1)


class TransformersBackend(BatchBackend):
    supports_choice = True

    def __init__(self, model: str | None = None, device: str | None = None, dtype: str | None = None):
        loaded, tokenizer, name, device = load_model(model, device, dtype)
        self.attach(loaded.eval(), tokenizer, name, device)

    def attach(self, model, tokenizer, name: str, device: str) -> None:
        """Use an already loaded model (the trainer evaluates its policy through this)."""
        self.model, self.tokenizer, self.model_name, self.device = model, tokenizer, name, device
        if not self.tokenizer.chat_template:
            raise SgpoError(f"model {self.model_name!r} has no chat template; use an instruct/chat model")
        self.tokenizer.padding_side = "left"
        eos = self.model.generation_config.eos_token_id
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}

    @classmethod
    def from_loaded(cls, model, tokenizer, name: str, device: str) -> "TransformersBackend":
        backend = cls.__new__(cls)
        backend.attach(model, tokenizer, name, device)
        return backend

    def _prompt_text(self, conversation: Conversation) -> str:
        return prompt_text(self.tokenizer, conversation)

    def generate_batch(self, requests: list[Request]) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        params = requests[0].params
        texts = [self._prompt_text(r.conversation) for r in requests]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = params.temperature > 0
        torch.manual_seed(batch_seed([r.seed for r in requests]))
        scale = params.temperature if sample else 1.0
        recorder = _SampledLogprobs(scale)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                top_k=0 if sample else None,  # no hidden top-k: sample from the full (top-p) distribution
                max_new_tokens=params.max_new_tokens,
                num_return_sequences=params.n,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([recorder]),
            )
            tokens = out[:, enc.input_ids.shape[1] :]
            logprobs = recorder.finish(tokens).cpu()
        tokens = tokens.cpu()
        prompt_tokens = enc.attention_mask.sum(dim=1).tolist()
        completions = [self._completion(tokens[i], logprobs[i]) for i in range(tokens.shape[0])]
        return [Generation(completions[i * params.n : (i + 1) * params.n], int(prompt_tokens[i]))
                for i in range(len(requests))]

    def _completion(self, tokens, logprobs) -> Completion:
        ids = tokens.tolist()
        end = next((i for i, tok in enumerate(ids) if tok in self.eos_ids), None)
        length = len(ids) if end is None else end + 1
        return Completion(
            text=self.tokenizer.decode(ids[:length], skip_special_tokens=True),
            finish_reason="length" if end is None else "stop",
            num_tokens=length,
            logprobs=[float(x) for x in logprobs[:length]],
            token_ids=ids[:length],
        )

    def choose_batch(self, requests: list[Request]) -> list[Choice]:
        """Score each whole answer turn by its log-likelihood; the prompt is encoded once and its cache shared."""
        import torch

        picks = []
        for request in requests:
            conversation, options = request.conversation, request.choices
            prompt = self._prompt_text(conversation)
            prompt_ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
            answers = [answer_ids(self.tokenizer, conversation, prompt, a) for a in options]
            width = max(len(a) for a in answers)
            pad = self.tokenizer.pad_token_id
            cand = torch.tensor([a + [pad] * (width - len(a)) for a in answers])
            mask = torch.tensor([[1] * len(a) + [0] * (width - len(a)) for a in answers])
            with torch.inference_mode():
                head = self.model(prompt_ids.to(self.device), use_cache=True, logits_to_keep=1)  # only the last row
                cache = getattr(head, "cache", None) or head.past_key_values  # renamed in transformers 5.2x
                cache.batch_repeat_interleave(len(options))
                attn = torch.cat([torch.ones(len(options), prompt_ids.shape[1], dtype=mask.dtype), mask], dim=1)
                tail = self.model(cand.to(self.device), attention_mask=attn.to(self.device), **{self._cache_kw: cache})
                # token t of each answer is predicted by the position before it: the prompt's last, then the answer's own
                logits = torch.cat([head.logits[:, -1:].expand(len(options), -1, -1), tail.logits[:, :-1]], dim=1)
                token_lp = torch.log_softmax(logits.float(), dim=-1).gather(2, cand.to(self.device).unsqueeze(2))
                scores = (token_lp.squeeze(2).cpu() * mask).sum(dim=1)
            picks.append(Choice(int(scores.argmax()), prompt_ids.shape[1]))
        return picks

    def close(self) -> None:
        del self.model


@BACKENDS.register("transformers", options=TransformersOptions)
def _transformers(model: str | None, options: TransformersOptions) -> TransformersBackend:
    """A Hugging Face model in this process (batched `generate`), on CPU or one GPU."""
    return TransformersBackend(model=model, device=options.device, dtype=options.dtype)
