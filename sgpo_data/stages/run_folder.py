"""The run folder: `RUN/<stage>/part-NNNNN.parquet`, a `part-NNNNN.done` marker written after each shard,
and `manifest.json` (config, input fingerprint, version, counts, statistics).

A stage resumes by skipping shards that have a marker; a shard without one is redone from scratch, so a
kill at any moment never leaves rows that a rerun would trust. A stage whose manifest records another config
or another input refuses to mix the two unless asked to overwrite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sgpo_data import __version__
from sgpo_data.errors import SgpoError

STAGE_ORDER = ["generate", "judge", "score", "export"]


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def fingerprint_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def fingerprint_table(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


class StageOutput:
    """One stage's folder in a run."""

    def __init__(self, run: str | Path, stage: str):
        self.run = Path(run)
        self.stage = stage
        self.dir = self.run / stage
        self.manifest_path = self.dir / "manifest.json"

    def part(self, shard: int) -> Path:
        return self.dir / f"part-{shard:05d}.parquet"

    def marker(self, shard: int) -> Path:
        return self.dir / f"part-{shard:05d}.done"

    def manifest(self) -> dict | None:
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else None

    def is_complete(self) -> bool:
        manifest = self.manifest()
        return bool(manifest and manifest.get("status") == "complete")

    def parts(self) -> list[Path]:
        return [self.part(i) for i in range(self.manifest()["num_shards"])]

    def require_complete(self) -> None:
        if not self.is_complete():
            raise SgpoError(
                f"{self.dir} is missing or incomplete; run `sgpo-data {self.stage} --out {self.run}` first"
            )

    def read(self) -> pa.Table:
        """The stage's rows, in shard order; fails with what to run when the stage is not complete."""
        self.require_complete()
        return self.read_parts()

    def read_parts(self) -> pa.Table:
        return pa.concat_tables([pq.read_table(p) for p in self.parts()])

    def output_fingerprint(self) -> str:
        return self.manifest()["output_fingerprint"]

    # -- writing ------------------------------------------------------------------------------------------

    def start(self, config: dict, input_fingerprint: str, num_shards: int, overwrite: bool = False) -> None:
        """Open the stage for writing; resume it when it was begun with the same config and input."""
        manifest = self.manifest()
        same = (
            manifest is not None
            and manifest["config"] == json.loads(json.dumps(config, default=str))
            and manifest["input_fingerprint"] == input_fingerprint
            and manifest["num_shards"] == num_shards
        )
        if manifest is not None and not same:
            if not overwrite:
                raise SgpoError(
                    f"{self.dir} was made with another config or input; pass --overwrite to redo "
                    f"the {self.stage} stage (and the stages after it) or use another --out"
                )
            shutil.rmtree(self.dir)
            manifest = None
        self.dir.mkdir(parents=True, exist_ok=True)
        if manifest is None:
            _write_json(
                self.manifest_path,
                {
                    "stage": self.stage,
                    "status": "running",
                    "config": config,
                    "input_fingerprint": input_fingerprint,
                    "num_shards": num_shards,
                    "sgpo_data_version": __version__,
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
            )

    def is_done(self, shard: int) -> bool:
        return self.marker(shard).is_file() and self.part(shard).is_file()

    def write_shard(self, shard: int, table: pa.Table) -> None:
        part = self.part(shard)
        tmp = part.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, part)
        _write_json(self.marker(shard), {"rows": table.num_rows})  # last: the shard now counts as done

    def finish(self, stats: dict) -> None:
        manifest = self.manifest()
        manifest.update(
            status="complete",
            rows=sum(json.loads(self.marker(i).read_text())["rows"] for i in range(manifest["num_shards"])),
            statistics=stats,
            output_fingerprint=fingerprint_files(self.parts()),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        _write_json(self.manifest_path, manifest)
