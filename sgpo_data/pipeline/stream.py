"""Streaming shards through one engine. Each shard is a `ShardJob`: the requests its rows still need (what the
call cache cannot answer), what to do with each result (record it; maybe ask for a follow-up, like a refill),
and how to assemble its rows once every request is answered. `stream_shards` keeps the engine's window full
across shard boundaries and yields each shard as soon as its last request completes; a shard's rows are
assembled by position, so their content never depends on the order results arrived in.

A `ServiceError` closes the feed: no new request goes out, the requests in flight are drained (their results
recorded), the shards that completed are yielded, then the error is raised. A signal (SIGTERM, SIGINT: see
`sgpo_data.pipeline.signals`) stops the feed: no new request goes out, the requests in flight get a grace period,
their results are recorded and committed, and no further shard is finished (a shard finished now could be graded
by a worker the same Ctrl-C stopped); every job is closed, then `Interrupted` is raised.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from sgpo_data.backends.base import Backend, Feed, Request, Result
from sgpo_data.errors import ServiceError
from sgpo_data.pipeline import signals
from sgpo_data.pipeline.folder import add_counts
from sgpo_data.pipeline.stage import Shard, ShardOutput, Stage


class ShardJob(ABC):
    def __init__(self, shard: Shard):
        self.shard = shard

    @abstractmethod
    def requests(self) -> list[Request]:
        """The requests this shard still needs (the cache answered the rest)."""

    @abstractmethod
    def take(self, request: Request, result: Result) -> list[Request]:
        """Record a result (never a ServiceError); return follow-up requests, if any."""

    def ready(self) -> bool:
        """Whether `finish` can run without waiting (e.g. on grading still under way); the stream keeps sending
        while it cannot, and waits only once nothing is left in flight."""
        return True

    @abstractmethod
    def finish(self) -> ShardOutput:
        """The shard's rows, once every request is answered."""

    def close(self) -> None:
        """Keep what was recorded (flush the cache), whether or not the shard finished."""


def stream_shards(jobs: Iterable[ShardJob], backend: Callable[[], Backend], max_in_flight: int,
                  advance: Callable[[int], None] = lambda n: None) -> Iterator[tuple[Shard, ShardOutput]]:
    """Every job's output, in completion order. `backend()` is called only if some request is not cached."""
    ready: deque[ShardJob] = deque()
    outstanding: dict[ShardJob, int] = {}
    broken: set[ShardJob] = set()
    unsent: list[ShardJob] = []  # the first job with requests, until the engine starts taking them

    def source() -> Iterator[Request]:
        unsent.clear()  # from here on the first job is in `outstanding`
        for job, requests in _with_requests(first_job, first_requests, jobs):
            for request in requests:
                request.tag = (job, request.tag)
            if requests:
                outstanding[job] = len(requests)
                yield from requests
            else:
                ready.append(job)

    def finished(wait: bool = False) -> Iterator[tuple[Shard, ShardOutput]]:
        if signals.requested():  # stopping: the rerun finishes these shards from the cache
            return
        for job in [j for j in ready if wait or j.ready()]:
            ready.remove(job)
            try:
                output = job.finish()
            finally:
                job.close()
            advance(job.shard.rows)
            yield job.shard, output

    jobs = iter(jobs)
    first_job, first_requests = None, []
    feed, fatal = Feed(source()), None
    try:
        with signals.on_stop(lambda: feed.stop(signals.GRACE_S)):  # raises Interrupted at the end after a signal
            for job in jobs:  # shards that need no request (decided locally, or cached) are done one at a time
                ready.append(job)  # closed by the `finally` below if it does not finish
                first_requests = job.requests()
                if first_requests:
                    ready.remove(job)
                    first_job = job
                    unsent.append(job)
                    break
                yield from finished(wait=True)
                if feed.closed:
                    break
            if first_job is not None and not feed.closed:
                for request, result in backend().stream(feed, max_in_flight):
                    job, request.tag = request.tag
                    outstanding[job] -= 1
                    if isinstance(result, ServiceError):
                        fatal = fatal or result
                        feed.close()
                        broken.add(job)
                    else:
                        follow_ups = job.take(request, result)
                        if feed.closed:  # recorded, but nothing new goes out
                            follow_ups = []
                        for follow_up in follow_ups:
                            follow_up.tag = (job, follow_up.tag)
                        feed.push_front(follow_ups)
                        outstanding[job] += len(follow_ups)
                    if outstanding[job] == 0:
                        del outstanding[job]
                        if job not in broken:
                            ready.append(job)
                    yield from finished()
                yield from finished(wait=True)
    finally:
        for job in set(outstanding) | broken | set(ready) | set(unsent):
            job.close()
    if fatal:
        raise fatal


def _with_requests(first: ShardJob, requests: list[Request], jobs: Iterator[ShardJob]):
    """(job, its requests): the first job's, already asked, then the others'."""
    yield first, requests
    for job in jobs:
        yield job, job.requests()


class StreamingStage(Stage):
    """A stage whose shards are answered by one engine: `job(shard)` says what each shard asks and how its rows
    are made; the engine (the `engine()` of the subclass) loads at the first request the cache cannot answer."""

    max_in_flight: int

    @abstractmethod
    def job(self, shard: Shard) -> ShardJob:
        """The shard's job (it opens the shard's call cache)."""

    @abstractmethod
    def engine(self) -> Backend:
        """The loaded engine."""

    def process_shards(self, shards: list[Shard]) -> Iterator[tuple[Shard, ShardOutput]]:
        return stream_shards((self.job(s) for s in shards), self.engine, self.max_in_flight, self.advance)

    def process(self, shard: Shard) -> ShardOutput:
        [(_, output)] = list(self.process_shards([shard]))
        return output

    def statistics(self, shard_stats: list[dict]) -> dict:
        """The rows' statistics, and `usage`: requests and tokens summed over the shards' own."""
        usage = add_counts((stats.get("usage", {}) for stats in shard_stats),
                           {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        return {**super().statistics(shard_stats), "usage": usage}
