"""The engine protocol. A stage hands an engine `Request`s through a `Feed` and takes the results back as they
complete (`Backend.stream`): at most `max_in_flight` sequences are outstanding at any time, across prompts and
shards, so no request waits for a slow neighbour to finish.

Each request ends with its result (`Generation`: n completions; `Choice`: the picked answer), or in its place a
`RequestError` (the stage marks only that request's rows) or a `ServiceError` (the service itself failed: the
stage records every result that came back, then stops). `generate` and `choose` are the same for a list of
requests, in order, for callers that want one call and a list back.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from sgpo_data.errors import ServiceError
from sgpo_data.outcomes import RequestError
from sgpo_data.registry import Registry

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


@dataclass(eq=False)
class Request:
    """One call: `params.n` samples of a conversation (its own `seed`), or, with `choices`, the answer among them
    the model finds likeliest. `pattern` constrains the samples to a regular expression (only sent to a backend
    that `supports_pattern`). `tag` is the caller's, handed back with the result."""

    conversation: Conversation
    params: SamplingParams | None = None
    seed: int = 0
    choices: list[str] | None = None
    pattern: str | None = None  # a regular expression the generated text must match (backends with supports_pattern)
    tag: object = None
    sent: float | None = None  # time.monotonic() when the feed handed it to the engine

    @property
    def sequences(self) -> int:
        """What the request counts against `max_in_flight`."""
        return 1 if self.choices is not None else self.params.n


@dataclass(frozen=True)
class Generation:
    completions: list[Completion]  # up to n: a server may return fewer
    prompt_tokens: int  # the prompt's length, paid once for all n samples


@dataclass(frozen=True)
class Choice:
    index: int  # into the request's choices
    prompt_tokens: int
    completion_tokens: int = 0  # a likelihood-scored pick decodes nothing


Result = Generation | Choice | RequestError | ServiceError


@dataclass(eq=False)
class Feed:
    """The requests waiting to go out, drawn lazily from `source` (a stage opens a shard only when its requests
    are needed); follow-up requests (refills) go to the front. A closed feed hands out nothing more; a stopped
    one also tells the engine how long it may still wait for the requests in flight (`patience`)."""

    source: Iterator[Request] = field(default_factory=lambda: iter(()))
    closed: bool = False
    deadline: float | None = None  # once stopped: time.monotonic() after which the requests in flight are dropped

    def __post_init__(self):
        self._queue: deque[Request] = deque()
        self._wake: list = []  # callbacks of engines waiting for a result, called when the feed is stopped

    @classmethod
    def of(cls, requests: Iterable[Request]) -> "Feed":
        return cls(iter(requests))

    def pop(self, budget: int | None = None) -> Request | None:
        """The next request if it fits in `budget` sequences (None: any); None when there is none now."""
        if self.closed:
            return None
        if not self._queue:
            nxt = next(self.source, None)
            if nxt is None:
                return None
            self._queue.append(nxt)
        if budget is not None and self._queue[0].sequences > budget:
            return None
        request = self._queue.popleft()
        request.sent = time.monotonic()
        return request

    def push_front(self, requests: list[Request]) -> None:
        self._queue.extendleft(reversed(requests))

    def close(self) -> None:
        self.closed = True

    def stop(self, grace_s: float) -> None:
        """Close the feed and give the requests in flight `grace_s` more seconds; wakes an engine waiting for a
        result so it can honour the deadline. Only sets state: safe in a signal handler."""
        self.closed = True
        self.deadline = time.monotonic() + grace_s
        for wake in self._wake:
            wake()

    def on_stop(self, wake) -> None:
        """Have `stop` call `wake()` (an engine that blocks waiting for results; it must be signal-safe)."""
        self._wake.append(wake)

    def patience(self) -> float | None:
        """Seconds the engine may still wait for a result: None (as long as it takes) until the feed is stopped."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


class Backend(ABC):
    """One engine holding one model."""

    model_name: str
    supports_choice: bool = False
    supports_pattern: bool = False  # can constrain free generation to a regular expression (Request.pattern)

    @abstractmethod
    def stream(self, feed: Feed, max_in_flight: int) -> Iterator[tuple[Request, Result]]:
        """Send the feed's requests, keeping at most `max_in_flight` sequences outstanding (always at least one
        request), and yield each with its result as it completes, until the feed and the engine are empty."""

    def run(self, requests: list[Request], max_in_flight: int | None = None) -> list[Result]:
        """Every request's result, in order (all in flight at once unless `max_in_flight` says otherwise)."""
        for position, request in enumerate(requests):
            request.tag = position
        results: list[Result | None] = [None] * len(requests)
        budget = max_in_flight or max(1, sum(r.sequences for r in requests))
        for request, result in self.stream(Feed.of(requests), budget):
            results[request.tag] = result
        return results

    def generate(self, conversations: list[Conversation], params: SamplingParams,
                 seeds: list[int] | None = None) -> list[list[Completion] | Outcome]:
        """Up to `params.n` completions for each conversation, or the request's error. `seeds`: one per
        conversation (default `params.seed + i`)."""
        seeds = seeds or [params.seed + i for i in range(len(conversations))]
        results = self.run([Request(c, params, seed) for c, seed in zip(conversations, seeds)])
        return [r.completions if isinstance(r, Generation) else r for r in results]

    def choose(self, conversations: list[Conversation], choices: list[list[str]]) -> list[int | Outcome]:
        """For each conversation, the index of the answer the model finds most likely among its choices."""
        if not self.supports_choice:
            raise NotImplementedError(f"{type(self).__name__} cannot constrain answers to fixed choices")
        results = self.run([Request(c, choices=list(options)) for c, options in zip(conversations, choices)])
        return [r.index if isinstance(r, Choice) else r for r in results]

    def close(self) -> None:
        """Free the engine's memory."""


class BatchBackend(Backend):
    """An engine that runs a batch at a time (transformers): the window is filled, run as one batch per kind of
    request, and refilled."""

    def stream(self, feed: Feed, max_in_flight: int) -> Iterator[tuple[Request, Result]]:
        while (first := feed.pop()) is not None:
            batch, used = [first], first.sequences
            while (request := feed.pop(max_in_flight - used)) is not None:
                batch.append(request)
                used += request.sequences
            groups: dict[object, list[Request]] = {}
            for request in batch:  # one engine call per kind: choices, or one set of sampling parameters
                kind = "choose" if request.choices is not None else (request.params.n, request.params.temperature,
                                                                    request.params.top_p, request.params.max_new_tokens)
                groups.setdefault(kind, []).append(request)
            for kind, group in groups.items():
                results = self.choose_batch(group) if kind == "choose" else self.generate_batch(group)
                yield from zip(group, results)

    @abstractmethod
    def generate_batch(self, requests: list[Request]) -> list[Result]:
        """Requests that share their sampling parameters (all but the seed), as one batch."""

    def choose_batch(self, requests: list[Request]) -> list[Result]:
        raise NotImplementedError(f"{type(self).__name__} cannot constrain answers to fixed choices")


# Every backend registers itself here, in its own file of this package (found on first use).
BACKENDS: Registry[Backend] = Registry("backend", package="sgpo_data.backends")
