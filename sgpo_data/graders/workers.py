"""Spawned worker processes that run one function over many items, with an exact time limit per item.

Why not `multiprocessing.Pool`: it can only stop a stuck task by terminating every worker (losing the other
workers' tasks), and a task's clock there starts when it is queued, not when it runs. Here each worker is sent
a few items at a time (one message) and sends back one result per item as it finishes, so the parent knows when
each item started: the item at the head of a worker's queue started when the result before it came back. An
item that runs past `timeout_s` gets its worker killed (only that one; the items queued behind it go back to
the queue) and a fresh worker is started, and warmed before it gets work.

Why not math-verify's own per-row timeouts inside the worker: they use `signal.alarm`, which cannot interrupt
work stuck in C code (sympy's big integers), and on a timeout math-verify returns False, a wrong verdict rather
than a `timeout`. Timing in the parent needs no signals, so it also works from any thread. Measured on 2 cores,
the CPU time per item was the same with 1 to 32 items per message (math-verify's parsing is nearly all of it),
so batches stay small (`_MAX_QUEUED`), which keeps the workers evenly loaded.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from sgpo_data.errors import SgpoError
from sgpo_data.schema import GradeStatus

_WARMUP_TIMEOUT_S = 60.0  # a fresh spawned worker imports its libraries (sympy): seconds, not milliseconds
_MAX_QUEUED = 8  # items sent ahead to one worker: enough to hide the round trip, few enough to balance the load


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _serve(conn: Connection, fn: Callable[..., Any], warmup: Callable[[], None]) -> None:
    """A worker's main loop: warm up and say so, then run batches of items, one (ok, value) message per item."""
    try:
        warmup()
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises SgpoError
        conn.send((False, f"{type(e).__name__}: {e}"))
        return
    conn.send((True, None))
    while True:
        try:
            batch = conn.recv()
        except EOFError:  # the parent closed the pool
            return
        for args in batch:
            try:
                conn.send((True, fn(*args)))
            except Exception:  # noqa: BLE001 - a bad item is data, not a crash
                conn.send((False, None))


class _Worker:
    def __init__(self, ctx, fn: Callable[..., Any], warmup: Callable[[], None]):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, fn, warmup), daemon=True)
        self.process.start()
        child.close()  # so that a dead worker reads as EOF here
        self.spawned = time.monotonic()
        self.ready = False
        self.queue: deque[int] = deque()  # the items sent and not yet answered, in order; the head is running
        self.head_started = 0.0

    def send(self, indices: list[int], items: list[tuple]) -> None:
        if not self.queue:
            self.head_started = time.monotonic()
        self.queue.extend(indices)
        self.conn.send([items[i] for i in indices])

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class WorkerPool:
    """`workers` spawned processes running `fn(*item)`; `warmup()` runs once in each before it gets items.

    `fn` and `warmup` must be picklable module-level functions. `run` returns one (status, value) per item,
    status GradeStatus.OK, ERROR (fn raised, or the worker died) or TIMEOUT (value None for both). A worker
    that cannot start at all is a broken environment: SgpoError, naming `name` and adding `hint`.
    """

    def __init__(self, fn: Callable[..., Any], warmup: Callable[[], None], workers: int, timeout_s: float,
                 name: str, hint: str):
        self.fn, self.warmup, self.size, self.timeout_s = fn, warmup, workers, timeout_s
        self.name, self.hint = name, hint
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []

    def start(self) -> None:
        """Start the missing workers and wait until every worker is warm (they warm up in parallel)."""
        while len(self._workers) < self.size:
            self._workers.append(_Worker(self._ctx, self.fn, self.warmup))
        while not all(w.ready for w in self._workers):
            self._collect([], deque())

    def run(self, items: list[tuple]) -> list[tuple[str, Any]]:
        if not items:
            return []  # no worker is started for nothing
        self.start()
        results: list = [None] * len(items)
        pending = deque(range(len(items)))
        while pending or any(w.queue for w in self._workers):
            ready = [w for w in self._workers if w.ready]
            share = math.ceil(len(pending) / len(ready)) if ready else 0  # a short list is split evenly
            for w in ready:
                n = min(_MAX_QUEUED - len(w.queue), share, len(pending))
                if len(w.queue) <= _MAX_QUEUED // 2 and n > 0:  # top up in batches, not one item per result
                    w.send([pending.popleft() for _ in range(n)], items)
            self._collect(results, pending)
        return results

    def _collect(self, results: list, pending: deque[int]) -> None:
        """Wait for messages (at most until the next deadline) and take them in; then replace the workers
        that died or ran past the time limit, their running item failed and the items behind it pending."""
        deadlines = [w.head_started + self.timeout_s for w in self._workers if w.queue]
        deadlines += [w.spawned + _WARMUP_TIMEOUT_S for w in self._workers if not w.ready]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        ready_conns = wait([w.conn for w in self._workers], timeout)
        for w in [w for w in self._workers if w.conn in ready_conns]:
            try:
                while w.conn.poll():
                    ok, value = w.conn.recv()
                    if not w.ready:
                        if not ok:
                            self._start_failed(value)
                        w.ready = True
                    else:
                        results[w.queue.popleft()] = (GradeStatus.OK if ok else GradeStatus.ERROR, value)
                        w.head_started = time.monotonic()
            except (EOFError, OSError):  # the worker died: crashed, or killed from outside
                if not w.ready:
                    w.process.join(1)
                    self._start_failed(f"it exited with code {w.process.exitcode}")
                self._replace(w, GradeStatus.ERROR, results, pending)
        now = time.monotonic()
        for w in list(self._workers):
            if not w.ready and now - w.spawned > _WARMUP_TIMEOUT_S:
                self._start_failed(f"it was not ready after {_WARMUP_TIMEOUT_S:.0f} s")
            # poll: a result that came in since the wait means the item finished in time
            if w.queue and now - w.head_started > self.timeout_s and not w.conn.poll():
                self._replace(w, GradeStatus.TIMEOUT, results, pending)

    def _replace(self, w: _Worker, status: str, results: list, pending: deque[int]) -> None:
        if w.queue:
            results[w.queue.popleft()] = (status, None)
            pending.extendleft(reversed(w.queue))
        w.kill()  # a stuck worker may stay in sympy for hours
        self._workers[self._workers.index(w)] = _Worker(self._ctx, self.fn, self.warmup)

    def _start_failed(self, reason: str) -> None:
        self.close()
        raise SgpoError(
            f"{self.name}: its worker process did not start ({reason}); {self.hint}, and that a script using "
            "it runs its code under `if __name__ == '__main__':` (the worker is spawned and re-imports it)"
        )

    def close(self) -> None:
        for w in self._workers:
            w.kill()
        self._workers = []
