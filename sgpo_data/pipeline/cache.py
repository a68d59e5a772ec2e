"""LLM-call cache: a rerun never pays twice for a call that succeeded. SQLite, one row per request, keyed by a
hash of what decides the answer (model, messages, sampling parameters, seed; never timeouts, retries or
concurrency). One file per shard (`RUN/cache/<stage>/part-NNNNN.sqlite`), so processes working on different
shards of one run folder never share a database. Only successes are stored: a failed request is retried.

Writes are grouped: `put` buffers, and the buffer is committed in one transaction every `flush_every` results
or `flush_s` seconds, and on `flush`/`close` (a stage closes a shard's cache when the shard is done or the
stage stops). Once a signal asked the process to stop (`sgpo_data.pipeline.signals`), every result is committed
as it comes. A process killed outright loses at most that last group, which the next run asks for again.

Keys hash the request with the credentials of URLs in its engine settings masked: a rotated password keeps every
cached call."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from sgpo_data.pipeline import signals
from sgpo_data.redaction import redact

_ENGINE_SETTINGS = {"options", "backend_options"}  # where a server URL sits; never the messages, which are data
_committed = 0  # results this process committed, over every cache (for the message of an interrupted run)


def committed() -> int:
    return _committed


def request_key(**request) -> str:
    for name in _ENGINE_SETTINGS & request.keys():
        request[name] = redact(request[name])
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


class CallCache:
    def __init__(self, path: str | Path, flush_every: int = 256, flush_s: float = 2.0):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()
        self.flush_every, self.flush_s = flush_every, flush_s
        self._pending: dict[str, str] = {}
        self._last_flush = time.monotonic()

    def get(self, key: str):
        if key in self._pending:
            return json.loads(self._pending[key])
        row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value) -> None:
        self._pending[key] = json.dumps(value)
        if (len(self._pending) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_s
                or signals.requested()):
            self.flush()

    def put_many(self, items: dict[str, object]) -> None:
        for key, value in items.items():
            self.put(key, value)

    def flush(self) -> None:
        """Commit the buffered results in one transaction."""
        global _committed
        if self._pending:
            self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?)", list(self._pending.items()))
            self._db.commit()
            _committed += len(self._pending)
            self._pending.clear()
        self._last_flush = time.monotonic()

    def __len__(self) -> int:
        self.flush()
        return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None

    def __enter__(self) -> "CallCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
