"""Coalescing concurrent calls into one batch, for the online rewards.

verl's reward loop calls `compute_score` once per response, all of a batch's calls at once (one asyncio task
each); TRL awaits its reward functions together. A `MicroBatcher` gathers the items of calls that arrive close
together, from any thread or event loop, and runs them as one batch on its own thread: one judge batch (the
engine's window full, groups complete) instead of one request at a time, and one caller of the engine at a time,
so no lock is needed around it.

A batch closes once no call has arrived for `window_s` seconds, or once it holds `max_batch` items; a call is
never split across batches. An exception of the batch is raised in every call of it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future


class MicroBatcher:
    def __init__(self, run: Callable[[list], list], window_s: float = 0.02, max_batch: int = 4096):
        self._run, self.window_s, self.max_batch = run, window_s, max_batch
        self._pending: list[tuple[list, Future]] = []
        self._last = 0.0  # when the last call arrived
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # batches run, for inspection

    def submit(self, items: list) -> Future:
        """A future of `items`' results, in order."""
        future: Future = Future()
        if not items:
            future.set_result([])
            return future
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append((list(items), future))
            self._last = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="sgpo-batcher", daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def __call__(self, items: list) -> list:
        return self.submit(items).result()

    async def acall(self, items: list) -> list:
        """The results, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(items))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _next_batch(self) -> list[tuple[list, Future]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            while not self._closed and sum(len(items) for items, _ in self._pending) < self.max_batch:
                quiet_left = self._last + self.window_s - time.monotonic()
                if quiet_left <= 0:
                    break
                self._cond.wait(quiet_left)
            batch, size = [], 0
            while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch):
                items, future = self._pending.pop(0)
                batch.append((items, future))
                size += len(items)
            return batch

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            flat = [item for items, _ in batch for item in items]
            self.batches += 1
            try:
                results = self._run(flat)
            except BaseException as exc:  # every call of the batch raises it
                for _, future in batch:
                    future.set_exception(exc)
                continue
            start = 0
            for items, future in batch:
                future.set_result(results[start:start + len(items)])
                start += len(items)
