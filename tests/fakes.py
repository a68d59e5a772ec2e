"""Test doubles for the engine protocol (sgpo_data/backends/base.py), shared by the test modules:

- `FakeBackend`: a batch engine whose answers the test scripts (`reply(request) -> Result`, and `choose` for
  choice requests) and that records every request and every batch it was handed;
- `ShuffledBackend`: a streaming engine that completes the requests in flight in a seeded random order, for fault
  injection on completion order (a request that fails, the service going down mid-stream);
- `ToyJob`: a shard of toy prompts for the streaming scheduler (`stream_shards`).

The fake OpenAI-compatible server is tests/fault_server.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pyarrow as pa

from sgpo_data.backends.base import (
    Backend,
    BatchBackend,
    Completion,
    Feed,
    Generation,
    Request,
    Result,
    SamplingParams,
)
from sgpo_data.errors import ServiceError
from sgpo_data.outcomes import ErrorKind, RequestError
from sgpo_data.pipeline.stage import Shard, ShardOutput
from sgpo_data.pipeline.stream import ShardJob

Reply = Callable[[Request], Result]


class FakeBackend(BatchBackend):
    """A batch engine that answers each generate request with `reply(request)` (a `Generation`, or the
    `RequestError` / `ServiceError` the request ends with) and, when `choose` is given, each choice request with
    `choose(request)` (a `Choice` or an outcome). Records every request it was handed (`requests`, in order) and
    every engine call (`batches`: one list of requests per `generate_batch` / `choose_batch`)."""

    def __init__(self, reply: Reply | None = None, *, choose: Reply | None = None, model_name: str = "fake",
                 supports_pattern: bool = False):
        self.reply, self.choose_reply = reply, choose
        self.model_name = model_name
        self.supports_choice = choose is not None
        self.supports_pattern = supports_pattern
        self.requests: list[Request] = []
        self.batches: list[list[Request]] = []

    def generate_batch(self, requests: list[Request]) -> list[Result]:
        if self.reply is None:
            raise AssertionError("FakeBackend was given no reply for generate requests")
        return self._answer(requests, self.reply)

    def choose_batch(self, requests: list[Request]) -> list[Result]:
        if self.choose_reply is None:
            return super().choose_batch(requests)  # raises: this engine cannot constrain answers
        return self._answer(requests, self.choose_reply)

    def _answer(self, requests: list[Request], reply: Reply) -> list[Result]:
        self.batches.append(list(requests))
        self.requests.extend(requests)
        return [reply(request) for request in requests]


def text_reply(text: str, prompt_tokens: int = 100, num_tokens: int = 5) -> Generation:
    """One completion of `text` that ended by itself."""
    return Generation([Completion(text, "stop", num_tokens, None)], prompt_tokens)


def scripted(texts: list[str], prompt_tokens: int = 10, num_tokens: int = 1) -> Reply:
    """A reply function that answers the requests, in the order they come, with `texts` (one each); a request
    beyond the last text fails the test (IndexError)."""
    queue = list(texts)
    return lambda request: text_reply(queue.pop(0), prompt_tokens, num_tokens)


def text(request: Request) -> str:
    """The first message of a request's conversation."""
    return request.conversation[0]["content"]


class ShuffledBackend(Backend):
    """Fault injection: completes the requests in flight in a seeded random order; records what it saw.

    Completion i of a request reads "<first message>#i"; the request whose first message is `service_down_at`
    ends with a `ServiceError`, those in `fail` with a `RequestError` (a 500)."""

    model_name = "shuffled"

    def __init__(self, seed: int = 0, fail: set[str] = frozenset(), service_down_at: str | None = None):
        self.rng, self.fail, self.service_down_at = random.Random(seed), fail, service_down_at
        self.sent: list[str] = []
        self.peak = 0
        self.events: list[tuple[str, str]] = []  # ("send" | "done", request text)

    def stream(self, feed: Feed, max_in_flight: int):
        flight: list[Request] = []
        while True:
            used = sum(r.sequences for r in flight)
            while (request := feed.pop(None if not flight else max_in_flight - used)) is not None:
                flight.append(request)
                used += request.sequences
                self.sent.append(text(request))
                self.events.append(("send", text(request)))
            self.peak = max(self.peak, used)
            if not flight:
                return
            request = flight.pop(self.rng.randrange(len(flight)))
            self.events.append(("done", text(request)))
            if text(request) == self.service_down_at:
                yield request, ServiceError("cannot reach the server")
            elif text(request) in self.fail:
                yield request, RequestError(ErrorKind.SERVER_ERROR, "500")
            else:
                completions = [Completion(f"{text(request)}#{i}", "stop", 1, None) for i in range(request.params.n)]
                yield request, Generation(completions, prompt_tokens=3)


class ToyJob(ShardJob):
    """A shard of `size` prompts ("s<shard>p<i>"), one request of n=2 each; `refill` asks once more for prompt 0's
    samples; `cached` answers every prompt from the (pretend) call cache, so the shard sends nothing."""

    def __init__(self, index: int, size: int = 4, cached: bool = False, refill: bool = False):
        super().__init__(Shard(index, f"fp{index}", size))
        self.size, self.cached, self.refill = size, cached, refill
        self.answers: dict[int, list[str]] = {i: [f"cached-{index}-{i}"] for i in range(size)} if cached else {}
        self.closed, self.opened = 0, False

    def requests(self) -> list[Request]:
        self.opened = True
        return [] if self.cached else [
            Request([{"role": "user", "content": f"s{self.shard.index}p{i}"}], SamplingParams(n=2), seed=i, tag=i)
            for i in range(self.size)]

    def take(self, request, result) -> list[Request]:
        i = request.tag
        self.answers.setdefault(i, []).extend(
            [c.text for c in result.completions] if isinstance(result, Generation) else [f"error:{result.kind}"])
        if self.refill and i == 0 and len(self.answers[0]) == 2:
            return [Request([{"role": "user", "content": f"s{self.shard.index}p0-refill"}], SamplingParams(n=1), tag=0)]
        return []

    def finish(self) -> ShardOutput:
        return ShardOutput(pa.table({"answers": [self.answers[i] for i in range(self.size)]}))

    def close(self) -> None:
        self.closed += 1
