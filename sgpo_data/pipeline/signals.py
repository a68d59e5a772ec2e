"""Stopping on SIGTERM (what Slurm sends on preemption) and SIGINT (Ctrl-C) without losing paid-for work.

`stop_on_signals()` wraps a command. While work that sends requests runs, it registers how to stop it
(`on_stop`); the first signal then closes its feed (no new request goes out), the requests in flight get
`GRACE_S` seconds to come back, every answer that came back is committed to the call cache at once, and
`Interrupted` is raised where the work is in a consistent state; shards it had not finished stay unmarked, so
the rerun resumes them. Work that registered nothing (reading inputs, score, export) is interrupted at once: a
shard counts as done only once its marker lands after its rows, so what it had not finished is redone. A second
signal interrupts at once, whatever runs.

The exit status is 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process
killed by it, so a scheduler sees the job was stopped, not failed.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GRACE_S = 10.0  # how long the requests in flight may take to come back (Slurm's KillWait defaults to 30 s)
SIGNALS = (signal.SIGTERM, signal.SIGINT)

_received: list[int] = []  # the signals received since stop_on_signals began
_stoppers: list[Callable[[], None]] = []


class Interrupted(BaseException):
    """A signal stopped the command. A BaseException, like KeyboardInterrupt: no `except Exception` turns it
    into a row error. `saved` is how many answers this process committed to the call cache."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum
        self.saved = 0

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        kept = (f"{self.saved} answered request(s) are saved in the call cache" if self.saved
                else "finished shards are kept")
        return f"interrupted by {name}: {kept}; rerun the same command to resume"


def requested() -> bool:
    """Whether a signal asked the process to stop (the call cache then commits every answer at once)."""
    return bool(_received)


@contextmanager
def on_stop(stop: Callable[[], None]) -> Iterator[None]:
    """While the block runs, the first signal calls `stop()` (from the signal handler: it must only set state)
    instead of interrupting; the block is expected to wind down, and `Interrupted` is raised when it ends."""
    _stoppers.append(stop)
    if _received:
        stop()
    try:
        yield
    finally:
        if stop in _stoppers:  # a generator closed after stop_on_signals ended finds it gone
            _stoppers.remove(stop)
    if _received:
        raise Interrupted(_received[0])


def _handle(signum: int, frame) -> None:
    first = not _received
    _received.append(signum)
    if not first or not _stoppers:
        raise Interrupted(_received[0])
    for stop in list(_stoppers):
        stop()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT stop the block gracefully (see the module's docstring); `Interrupted.saved` is set on
    the way out. Outside the main thread, where Python cannot handle signals, the block runs as is."""
    from sgpo_data.pipeline.cache import committed

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handle) for sig in SIGNALS}
    start = committed()
    try:
        yield
    except Interrupted as exc:
        exc.saved = committed() - start
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        _received.clear()
        _stoppers.clear()
