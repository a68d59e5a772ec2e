"""Writing one stage's folder: the manifest, atomic shard writes, completion markers, and the decision of which
shards still need work. Only the runner writes here; everything else reads through `sgpo_data.run_reader`.

A shard needs work when it has no marker, when its marker records another input (its upstream shard was
redone), or when rows in it are in error (a plain rerun retries them; the call cache makes every call that had
succeeded free). A stage whose manifest records another config or input refuses to mix the two unless asked to
overwrite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pyarrow as pa
import pyarrow.parquet as pq

from sgpo_data import __version__
from sgpo_data.errors import SgpoError
from sgpo_data.redaction import redact
from sgpo_data.run_reader import StageFiles

__all__ = ["StageFolder", "fingerprint_files", "fingerprint_table", "hash_json"]


def write_json(path, payload: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: shard processes may write at once
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def hash_json(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_files(paths) -> str:
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


def add_counts(counts, start: dict[str, int] | None = None) -> dict[str, int]:
    """Count dicts (by kind, by judge, usage) summed key by key, starting from `start`."""
    total = dict(start or {})
    for part in counts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total


def total_errors(markers) -> dict[str, int]:
    """Rows in error by kind, summed over shard markers."""
    return add_counts(marker["errors"] for marker in markers)


class StageFolder(StageFiles):
    """One stage's folder, for writing; `upstream`: the stage it reads (None: the prompts), kept in its manifest."""

    def __init__(self, run, stage: str, upstream: str | None = None):
        super().__init__(run, stage)
        self.upstream_name = upstream

    def start(self, config: dict, input_fingerprint: str, num_shards: int, overwrite: bool = False) -> None:
        """Open the stage for writing; resume it when it was begun with the same config and input. The config is
        recorded and compared with URL credentials masked: a manifest never holds a password, and a rotated one is
        the same config."""
        manifest = self.manifest()
        config = redact(json.loads(json.dumps(config, default=str)))
        same = manifest is not None and (redact(manifest["config"]), manifest["input_fingerprint"],
                                         manifest["num_shards"]) == (config, input_fingerprint, num_shards)
        if same and manifest["config"] != config:  # recorded before credentials were masked: mask them now
            write_json(self.manifest_path, {**manifest, "config": config})
        if manifest is not None and not same:
            if not overwrite:
                raise SgpoError(
                    f"{self.dir} was made with another config or input; pass --overwrite to redo "
                    f"the {self.stage} stage (and the stages after it) or use another --out"
                )
            shutil.rmtree(self.dir)
            shutil.rmtree(self.run / "cache" / self.stage, ignore_errors=True)
            manifest = None
        self.dir.mkdir(parents=True, exist_ok=True)
        if manifest is None:
            write_json(self.manifest_path, {
                "stage": self.stage,
                "status": "running",
                "config": config,
                "input_fingerprint": input_fingerprint,
                "identity": hash_json([config, input_fingerprint]),  # what the next stage's input is
                "upstream": self.upstream_name,
                "num_shards": num_shards,
                "sgpo_data_version": __version__,
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })

    def needs_work(self, shard: int, input_fingerprint: str) -> bool:
        marker = self.read_marker(shard)
        return marker is None or marker["input"] != input_fingerprint or bool(marker["errors"])

    def write_shard(self, shard: int, rows: pa.Table, input_fingerprint: str, errors: dict[str, int],
                    stats: dict | None = None) -> None:
        """Write the rows atomically, then the marker: only then does the shard count as done."""
        part = self.part(shard)
        self.marker(shard).unlink(missing_ok=True)  # a redone shard is not done until its new marker lands
        tmp = part.with_name(f"{part.name}.{os.getpid()}.tmp")
        pq.write_table(rows, tmp)
        os.replace(tmp, part)
        write_json(self.marker(shard), {"rows": rows.num_rows, "errors": errors, "input": input_fingerprint,
                                        "output": fingerprint_files([part]), "stats": stats or {}})

    def finish(self, inputs: dict[int, str], statistics) -> dict | None:
        """Mark the stage complete when every shard is done on its current input; `statistics(markers)` gives the
        manifest's statistics. The manifest records the output fingerprint of the upstream it was made from, which
        readers check to refuse stale rows. Returns the manifest, or None while shards (of other processes) are
        pending."""
        markers = {i: self.read_marker(i) for i in inputs}
        if any(m is None or m["input"] != inputs[i] for i, m in markers.items()):
            return None
        manifest = self.manifest()
        upstream = self.upstream
        manifest.update(
            status="complete",
            rows=sum(m["rows"] for m in markers.values()),
            errors=total_errors(markers.values()),
            statistics=statistics(markers),
            output_fingerprint=hash_json([markers[i]["output"] for i in sorted(markers)]),
            upstream_output=upstream.output_fingerprint() if upstream and upstream.is_complete() else None,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        write_json(self.manifest_path, manifest)
        return manifest

    def reopen(self) -> None:
        """A complete stage with shards to redo is running again until they are done."""
        manifest = self.manifest()
        if manifest.get("status") == "complete":
            manifest["status"] = "running"
            write_json(self.manifest_path, manifest)
