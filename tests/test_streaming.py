"""The streaming scheduler without an engine: a window of requests that spans shards, results that arrive in
any order, follow-ups, a service failure mid-stream, and work the cache already answered."""

from __future__ import annotations

import pytest

from sgpo_data.backends.base import Completion, Generation, Request, SamplingParams
from sgpo_data.errors import ServiceError
from sgpo_data.pipeline.stream import stream_shards
from tests.fakes import FakeBackend, ShuffledBackend, ToyJob, text


def run(jobs, backend, max_in_flight=6):
    return {shard.index: out.table.to_pylist() for shard, out in stream_shards(jobs, lambda: backend, max_in_flight)}


def test_shard_content_does_not_depend_on_completion_order():
    outputs = [run([ToyJob(i) for i in range(3)], ShuffledBackend(seed)) for seed in range(5)]
    assert all(out == outputs[0] for out in outputs)
    assert outputs[0][1][2] == {"answers": ["s1p2#0", "s1p2#1"]}


def test_the_window_is_kept_full_across_shard_boundaries_and_never_exceeded():
    backend = ShuffledBackend(seed=1)
    run([ToyJob(i) for i in range(3)], backend, max_in_flight=6)
    assert backend.peak == 6  # 3 requests of n=2
    assert len(backend.sent) == 12
    # shard 1's first request went out before every request of shard 0 had come back: no barrier at the boundary
    first_of_shard1 = backend.events.index(("send", "s1p0"))
    shard0_done = max(backend.events.index(("done", f"s0p{i}")) for i in range(4))
    assert first_of_shard1 < shard0_done


def test_a_request_larger_than_the_window_still_goes_out_alone():
    backend = ShuffledBackend()
    out = run([ToyJob(0, size=2)], backend, max_in_flight=1)
    assert backend.peak == 2 and out[0][0]["answers"] == ["s0p0#0", "s0p0#1"]


def test_follow_ups_are_sent_first_and_land_in_their_shard():
    backend = ShuffledBackend(seed=2)
    out = run([ToyJob(i, refill=True) for i in range(2)], backend, max_in_flight=4)
    assert out[0][0]["answers"] == ["s0p0#0", "s0p0#1", "s0p0-refill#0"]
    refill = backend.sent.index("s0p0-refill")
    assert refill < backend.sent.index("s1p3")  # ahead of requests still waiting in the feed


def test_a_failed_request_is_recorded_in_its_shard_and_the_stream_goes_on():
    out = run([ToyJob(i) for i in range(2)], ShuffledBackend(fail={"s0p1"}))
    assert out[0][1]["answers"] == ["error:server_error"] and len(out) == 2


def test_a_service_failure_sends_nothing_more_drains_the_window_and_keeps_finished_shards():
    backend = ShuffledBackend(seed=3, service_down_at="s1p1")
    jobs = [ToyJob(i) for i in range(4)]
    finished = []
    with pytest.raises(ServiceError, match="cannot reach"):
        for shard, _ in stream_shards(jobs, lambda: backend, 6):
            finished.append(shard.index)
    down = backend.events.index(("done", "s1p1"))
    assert not [e for e in backend.events[down:] if e[0] == "send"]  # nothing sent after the failure
    in_flight = {t for kind, t in backend.events[:down] if kind == "send"} - {t for kind, t in backend.events[:down] if kind == "done"}
    assert {t for kind, t in backend.events[down:] if kind == "done"} == in_flight  # drained
    assert 1 not in finished and 0 in finished
    assert all(job.closed == job.opened for job in jobs) and not jobs[3].opened  # every opened shard's cache kept


def test_shards_the_cache_answered_need_no_engine():
    def no_engine():
        raise AssertionError("the engine was loaded")

    out = {s.index: o.table.to_pylist() for s, o in stream_shards([ToyJob(i, cached=True) for i in range(2)], no_engine, 4)}
    assert out[1][3] == {"answers": ["cached-1-3"]}


def test_shards_that_need_no_request_are_finished_one_at_a_time():
    # A local judge or a fully cached rerun: a shard is yielded (and written) before the next one is loaded.
    jobs = [ToyJob(i, cached=True) for i in range(3)]
    for shard, _ in stream_shards(iter(jobs), lambda: None, 4):
        assert [job.opened for job in jobs] == [i <= shard.index for i in range(3)]
        assert jobs[shard.index].closed == 1


def test_cached_and_uncached_shards_mix():
    backend = ShuffledBackend()
    out = run([ToyJob(0, cached=True), ToyJob(1), ToyJob(2, cached=True)], backend)
    assert sorted(out) == [0, 1, 2] and len(backend.sent) == 4


def test_a_batch_engine_fills_each_batch_up_to_the_window_one_call_per_sampling_setting():
    backend = FakeBackend(lambda r: Generation([Completion(text(r), "stop", 1, None)] * r.params.n, 1))  # an echo
    requests = [Request([{"role": "user", "content": f"q{i}"}], SamplingParams(n=2 if i < 5 else 1)) for i in range(7)]
    results = backend.run(requests, max_in_flight=4)
    assert [r.completions[0].text for r in results] == [f"q{i}" for i in range(7)]
    batches = [[text(r) for r in batch] for batch in backend.batches]
    assert batches == [["q0", "q1"], ["q2", "q3"], ["q4"], ["q5", "q6"]]
