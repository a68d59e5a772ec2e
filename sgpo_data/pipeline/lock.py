"""The run-folder lock: one process works in a run folder at a time, or N processes each on its own `--shard i/N`.

`fcntl.flock` on `RUN/.lock`: an unsharded process takes it exclusively; each `--shard i/N` process takes it
shared (shard processes coexist, an unsharded one cannot join them) and `RUN/.lock.shard-i-of-N` exclusively
(the same shard twice is refused). The kernel drops a flock when its holder dies, even by kill -9, so a lock
file left behind by a killed process is simply taken over. The files hold the holder's pid and host, for the
message of the process that is refused. flock is advisory and works across processes of one machine; on a
shared filesystem across machines it depends on the filesystem (NFSv4 and Lustre support it).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from sgpo_data.errors import SgpoError


class RunLock:
    def __init__(self, run: str | Path, shard_index: int = 0, shard_count: int = 1):
        self.run = Path(run)
        self.sharded = shard_count > 1
        self.paths = [self.run / ".lock"]
        if self.sharded:
            self.paths.append(self.run / f".lock.shard-{shard_index}-of-{shard_count}")
        self._handles: list = []

    def acquire(self) -> "RunLock":
        self.run.mkdir(parents=True, exist_ok=True)
        try:
            self._take()
        except BaseException:  # refused, or interrupted by a signal: hold none of the locks
            self.release()
            raise
        return self

    def _take(self) -> None:
        modes = [fcntl.LOCK_SH if self.sharded else fcntl.LOCK_EX] + [fcntl.LOCK_EX] * (len(self.paths) - 1)
        for path, mode in zip(self.paths, modes):
            handle = open(path, "a+")
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                self.release()
                raise SgpoError(f"{self.run} is in use by {_holder(path)}; wait for it to finish or use another "
                                "--out (a process that was killed releases the lock by itself)") from None
            if mode == fcntl.LOCK_EX:  # record who holds it; a shared holder leaves the record to its shard file
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
                handle.flush()
            self._handles.append(handle)

    def release(self) -> None:
        for handle in reversed(self._handles):
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._handles = []

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _holder(path: Path) -> str:
    """Who holds `path`: its recorded pid, or the shard processes when they hold it together."""
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        record = {}
    if path.name == ".lock":
        shards = sorted(p.name.removeprefix(".lock.") for p in path.parent.glob(".lock.shard-*") if _held(p))
        if shards:
            return "--shard processes (" + ", ".join(shards) + ")"
    if record.get("pid"):
        return f"pid {record['pid']} on {record.get('host', '?')}"
    return "another process"


def _held(path: Path) -> bool:
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
