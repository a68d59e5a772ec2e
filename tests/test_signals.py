"""SIGTERM (Slurm's preemption) and SIGINT (Ctrl-C) stop a command gracefully: no new request goes out, every
answer that came back is committed to the call cache, unfinished shards stay unmarked, the run lock is released,
one line says so, and the exit status is 143 / 130. A rerun then asks for nothing that had been answered."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sgpo_data.backends.base import Feed, Request, SamplingParams
from sgpo_data.pipeline.cache import CallCache
from sgpo_data.pipeline.signals import Interrupted, on_stop, stop_on_signals
from sgpo_data.pipeline.stream import stream_shards
from sgpo_data.run_reader import StageFiles
from tests.fault_server import Fault, FaultServer
from tests.fakes import ShuffledBackend, ToyJob

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


class SignalledBackend(ShuffledBackend):
    """Sends this process `signum` once `after` results have been handed back."""

    def __init__(self, signum: int, after: int):
        super().__init__(seed=4)
        self.signum, self.after, self.results = signum, after, 0

    def stream(self, feed, max_in_flight):
        for request, result in super().stream(feed, max_in_flight):
            yield request, result
            self.results += 1
            if self.results == self.after:
                self.events.append(("signal", ""))
                os.kill(os.getpid(), self.signum)


def test_a_signal_mid_stream_sends_nothing_more_records_the_requests_in_flight_and_finishes_no_shard():
    backend = SignalledBackend(signal.SIGTERM, after=5)
    jobs = [ToyJob(i) for i in range(4)]
    finished = []
    with pytest.raises(Interrupted) as raised, stop_on_signals():
        for shard, _ in stream_shards(jobs, lambda: backend, 6):
            finished.append(shard.index)
    assert raised.value.exit_code == 143 and "interrupted by SIGTERM" in str(raised.value)
    at = backend.events.index(("signal", ""))
    assert not [e for e in backend.events[at:] if e[0] == "send"]  # nothing sent after the signal
    sent = {t for kind, t in backend.events[:at] if kind == "send"}
    done = {t for kind, t in backend.events if kind == "done"}
    assert done == sent  # the requests in flight came back ...
    recorded = {f"s{job.shard.index}p{i}" for job in jobs for i in job.answers}
    assert recorded == sent  # ... and were recorded
    assert len(sent) < 16 and not finished  # the signal came before shard 0 was complete
    assert all(job.closed == job.opened for job in jobs)  # every opened shard's cache kept


def test_work_that_registered_no_stop_is_interrupted_at_once_and_the_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as raised, stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # not reached
    assert raised.value.exit_code == 130 and str(raised.value).startswith("interrupted by SIGINT: ")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_first_signal_asks_registered_work_to_stop_and_a_second_interrupts_at_once():
    asked = []
    with pytest.raises(Interrupted), stop_on_signals(), on_stop(lambda: asked.append(True)):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert asked == [True]  # still running: the work winds down by itself
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # not reached
    assert asked == [True]


def test_after_a_signal_every_answer_is_committed_as_it_comes(tmp_path):
    path = tmp_path / "part.sqlite"
    with pytest.raises(Interrupted) as raised, stop_on_signals(), on_stop(lambda: None):
        cache = CallCache(path, flush_s=3600)
        cache.put("a", 1)
        assert _stored(path) == 0  # grouped
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        cache.put("b", 2)
        assert _stored(path) == 2  # committed at once
        cache.close()
    assert raised.value.saved == 2 and "2 answered request(s) are saved in the call cache" in str(raised.value)


def _stored(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]


def test_a_stopped_feed_gives_the_requests_in_flight_only_the_grace_period():
    """A server that never answers: once both requests are in flight the feed is stopped with 0.2 s of grace, and
    the stream gives them up and ends with no result (waiting for them would have ended each with the client's
    timeout error after 30 s)."""
    from sgpo_data.backends import get_backend

    with FaultServer() as server:
        server.faults.append(Fault("slow", delay_s=3600))  # no answer before the server stops
        backend = get_backend("openai", "fake", {"base_url": server.base_url, "timeout_s": 30})
        feed = Feed.of([Request([{"role": "user", "content": f"q{i}"}], SamplingParams(), seed=i) for i in range(2)])

        def stop_once_both_are_in_flight():
            patience = time.monotonic() + 30  # not an assertion: the count is checked below
            while len(server.log) < 2 and time.monotonic() < patience:
                time.sleep(0.01)
            feed.stop(0.2)

        threading.Thread(target=stop_once_both_are_in_flight, daemon=True).start()
        try:
            results = list(backend.stream(feed, 4))
        finally:
            backend.close()
    assert results == []
    assert len(server.log) == 2 and all(call.status == 0 for call in server.log)  # sent, never answered


# -- the CLI, killed for real -------------------------------------------------------------------------------------

PROMPTS, G = 8, 2  # 4 shards of 2 prompts, one request per prompt; 3 requests in flight at a time


def cli(out: Path, policy: FaultServer, judge: FaultServer, command: str) -> list[str]:
    args = [sys.executable, "-m", "sgpo_data_cli", command, *([str(DEMO)] if command == "run" else ["-r", str(DEMO)]),
            "--out", str(out), "--progress-every", "1000",
            "--set", f"data.arithmetic.num_problems={PROMPTS}", "--set", f"generate.sampling.num_samples={G}",
            "--set", "generate.prompts_per_shard=2", "--set", f"generate.max_in_flight={3 * G}",
            "--set", "judge.name=llm", "--set", "judge.options={}"]
    for section, server in (("generate", policy), ("judge", judge)):
        args += ["--set", f"{section}.backend=openai", "--set", f"{section}.model=fake", "--set",
                 f"{section}.backend.options={{base_url: '{server.base_url}', max_retries: 0, timeout_s: 30}}"]
    return args


def delivered(server: FaultServer) -> set[str]:
    return {c.key for c in server.log if c.status == 200}


def in_flight(server: FaultServer) -> int:
    return sum(c.status == 0 for c in server.log)


@pytest.mark.slow
@pytest.mark.parametrize("command, signum, code", [("run", signal.SIGTERM, 143), ("generate", signal.SIGINT, 130)])
def test_a_signal_keeps_every_answered_request_and_the_rerun_asks_for_none_of_them(command, signum, code, tmp_path):
    name = signal.Signals(signum).name
    with FaultServer() as policy, FaultServer() as judge:
        policy.faults.append(Fault("slow", delay_s=1.5))
        process = subprocess.Popen(cli(tmp_path, policy, judge, command), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while (len(delivered(policy)) < 3 or in_flight(policy) < 2) and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        answered_before = delivered(policy)
        assert in_flight(policy) >= 2  # some answered, more on their way
        process.send_signal(signum)  # to this process only, as Slurm's --signal or kill would
        output, _ = process.communicate(timeout=60)
        assert process.returncode == code, output
        lines = [line for line in output.splitlines() if line.strip()]
        assert "Traceback" not in output
        assert len([line for line in lines if "interrupted" in line]) == 1 and lines[-1].startswith(f"interrupted by {name}: ")
        saved = re.fullmatch(rf"interrupted by {name}: (\d+) answered request\(s\) are saved in the call cache; "
                             "rerun the same command to resume", lines[-1])
        answered = delivered(policy)
        assert saved and int(saved[1]) == len(answered) > len(answered_before) >= 3, output  # in flight: drained
        assert len(answered) < PROMPTS  # the signal stopped the stage: no new request went out
        generate = StageFiles(tmp_path, "generate")
        assert not generate.is_complete() and generate.missing_shards()  # unfinished shards stay unmarked

        policy.faults.clear()
        counts = policy.requests()
        rerun = subprocess.run(cli(tmp_path, policy, judge, command), capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr  # the lock was released
        again = [key for key in answered if policy.requests()[key] != counts[key]]
        assert not again, f"{len(again)} request(s) answered before the {name} were sent again"
        assert len(delivered(policy)) == PROMPTS
