"""The engine protocol: sample n completions per conversation; optionally pick one of fixed choices.

Each request ends with its result, or in its place a `RequestError` (the stage marks only that request's rows)
or a `ServiceError` (the service itself failed: the stage records every result that came back, then stops)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

from sgpo_data.errors import ServiceError
from sgpo_data.outcomes import RequestError

Outcome = RequestError | ServiceError  # what a request ends with when it has no result

Conversation = list[dict[str, str]]  # chat messages: [{"role": "user", "content": "..."}]


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)
    num_tokens: int  # generated tokens, the end-of-turn token included when finish_reason == "stop"
    logprobs: list[float] | None  # behaviour log-probability of each generated token
    token_ids: list[int] | None = None  # the generated tokens, so a trainer need not re-tokenise the text

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(ABC):
    """One engine holding one model."""

    model_name: str
    supports_choice: bool = False

    @abstractmethod
    def generate(self, conversations: list[Conversation], params: SamplingParams,
                 seeds: list[int] | None = None) -> list[list[Completion] | Outcome]:
        """Up to `params.n` completions for each conversation, in order (a server may return fewer), or the
        request's error. `seeds`: one per conversation (default `params.seed + i`)."""

    def choose(self, conversations: list[Conversation], choices: list[list[str]]) -> list[int | Outcome]:
        """For each conversation, the index of the answer the model finds most likely among its choices."""
        raise NotImplementedError(f"{type(self).__name__} cannot constrain answers to fixed choices")

    def close(self) -> None:
        """Free the engine's memory."""
