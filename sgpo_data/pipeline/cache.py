"""LLM-call cache: a rerun never pays twice for a call that succeeded. SQLite, one row per request, keyed by a
hash of what decides the answer (model, messages, sampling parameters, seed; never timeouts, retries or
concurrency). One file per shard (`RUN/cache/<stage>/part-NNNNN.sqlite`), so processes working on different
shards of one run folder never share a database. Only successes are stored: a failed request is retried."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path


def request_key(**request) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


class CallCache:
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get(self, key: str):
        row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put_many(self, items: dict[str, object]) -> None:
        """Store several results in one transaction (one commit per engine call, not per row)."""
        if items:
            self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?)",
                                 [(key, json.dumps(value)) for key, value in items.items()])
            self._db.commit()

    def put(self, key: str, value) -> None:
        self.put_many({key: value})

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "CallCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
