"""Reading a run folder: the one place that knows its layout. Train, report, export and the card read runs
through here, never through the stages.

RUN/<stage>/part-NNNNN.parquet   the rows of shard N
RUN/<stage>/part-NNNNN.done      its completion marker, written last: rows, errors by kind, input and output hashes
RUN/<stage>/manifest.json        config, input identity, shard count, version; on completion rows, errors,
                                 statistics and the output fingerprint
RUN/cache/<stage>/part-NNNNN.sqlite   the LLM-call cache of shard N
RUN/.lock                        held by the process working in the run (docs/ARCHITECTURE.md, "The lock")
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from sgpo_data.errors import SgpoError, first_line


class StageFiles:
    """One stage's folder in a run, read-only."""

    def __init__(self, run: str | Path, stage: str):
        self.run = Path(run)
        self.stage = stage
        self.dir = self.run / stage
        self.manifest_path = self.dir / "manifest.json"

    def part(self, shard: int) -> Path:
        return self.dir / f"part-{shard:05d}.parquet"

    def marker(self, shard: int) -> Path:
        return self.dir / f"part-{shard:05d}.done"

    def cache_path(self, shard: int) -> Path:
        return self.run / "cache" / self.stage / f"part-{shard:05d}.sqlite"

    @property
    def redo(self) -> str:
        """How to remake this stage's folder, for messages about a damaged one."""
        return f"delete {self.dir} and rerun `sgpo-data {self.stage} --out {self.run}`"

    def manifest(self) -> dict | None:
        """The stage's manifest, or None when it has none; a damaged one (truncated, edited) is one error naming it."""
        if not self.manifest_path.is_file():
            if self.manifest_path.exists():
                raise SgpoError(f"{self.manifest_path} is not a file; {self.redo}")
            return None
        manifest = _read_json(self.manifest_path, "manifest", MANIFEST_KEYS, self.redo)
        if manifest.get("status") == "complete" and (missing := [k for k in COMPLETE_KEYS if k not in manifest]):
            raise SgpoError(f"{self.manifest_path}: the manifest of a complete stage lacks {', '.join(missing)} "
                            f"(damaged or edited?); {self.redo}")
        shards = manifest["num_shards"]
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 0:
            raise SgpoError(f"{self.manifest_path}: num_shards is {shards!r}, not a shard count (damaged or "
                            f"edited?); {self.redo}")
        return manifest

    def read_marker(self, shard: int) -> dict | None:
        """The shard's marker, or None when the shard is not finished (a part without marker is not trusted)."""
        marker = self.marker(shard)
        if not (marker.is_file() and self.part(shard).is_file()):
            return None
        return _read_json(marker, "completion marker", MARKER_KEYS,
                          f"delete it (the shard is redone) and rerun `sgpo-data {self.stage} --out {self.run}`")

    def is_complete(self) -> bool:
        manifest = self.manifest()
        return bool(manifest and manifest.get("status") == "complete")

    def missing_shards(self) -> list[int]:
        manifest = self.manifest()
        if manifest is None:
            return []
        return [i for i in range(manifest["num_shards"]) if self.read_marker(i) is None]

    def require_complete(self) -> None:
        """Fail with one line naming what is missing and what to run, a part that is not a Parquet file, or an
        upstream stage redone since this one was made (its rows would no longer match)."""
        if self.is_complete():
            self.check_parts()
            self.require_current()
            return
        fix = f"run `sgpo-data {self.stage} --out {self.run}` first"
        missing = self.missing_shards()
        if self.manifest() is None or not missing:
            raise SgpoError(f"{self.dir} is missing or incomplete; {fix}")
        shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise SgpoError(f"{self.dir} is incomplete: shard(s) {shown} of {self.manifest()['num_shards']} are not "
                        f"finished; {fix} (or finish its --shard jobs)")

    @property
    def upstream(self) -> "StageFiles | None":
        """The stage this one was made from, as its manifest records."""
        name = (self.manifest() or {}).get("upstream")
        return StageFiles(self.run, name) if name else None

    def require_current(self) -> None:
        """Every stage up the chain still holds the output this complete stage was made from: a stage redone with
        `--overwrite`, or retried, after its downstream was made leaves that downstream stale, and stale rows are
        refused rather than read beside the new ones."""
        stage, upstream = self, self.upstream
        if "upstream" not in self.manifest():
            raise SgpoError(f"{self.dir} was made by an older sgpo-data; redo it: rerun `sgpo-data {self.stage} --out "
                            f"{self.run} --overwrite` (and the stages after it)")
        while upstream is not None:
            manifest = stage.manifest()
            made_from = manifest.get("upstream_output")
            # an upstream redone with another config needs --overwrite here too; one that only retried rows does not
            other_input = upstream.manifest() is not None and manifest["input_fingerprint"] != upstream.manifest()["identity"]
            redo = (f"rerun `sgpo-data {stage.stage} --out {self.run}{' --overwrite' if other_input else ''}` (and the "
                    "stages after it)")
            if made_from is None:
                raise SgpoError(f"{stage.dir} records no fingerprint of the {upstream.stage} output it was made from "
                                f"(made by an older sgpo-data); {redo}")
            if not upstream.is_complete():
                raise SgpoError(f"{stage.dir} was made from a {upstream.stage} stage that is now missing or "
                                f"unfinished; finish {upstream.stage}, then {redo}")
            if made_from != upstream.output_fingerprint():
                raise SgpoError(f"{stage.dir} is out of date: {upstream.stage} was redone after it was made, so its "
                                f"rows no longer match; {redo}")
            stage, upstream = upstream, upstream.upstream

    def parts(self) -> list[Path]:
        return [self.part(i) for i in range(self.manifest()["num_shards"])]

    def check_parts(self) -> None:
        """Every part is there and ends in a Parquet footer (a truncated or replaced file fails here, by name,
        instead of deep inside a reader)."""
        import pyarrow.parquet as pq

        for part in self.parts():
            try:
                pq.read_metadata(part)
            except Exception as exc:  # FileNotFoundError, ArrowInvalid, OSError: all mean the part is unusable
                raise SgpoError(f"{part} is missing or not a readable Parquet file ({first_line(exc)}); "
                                f"{self.redo}") from None

    def dataset(self):
        """The stage's rows as one pyarrow dataset over its parts, in shard order."""
        import pyarrow.dataset as ds

        return ds.dataset([str(p) for p in self.parts()], format="parquet")

    def read(self) -> pa.Table:
        """Every row of a complete stage; fails with what to run otherwise."""
        self.require_complete()
        try:
            return self.dataset().to_table()
        except (pa.ArrowException, OSError) as exc:  # a part damaged past its footer: name the first such part
            import pyarrow.parquet as pq

            where, reason = self.dir, first_line(exc)
            for part in self.parts():
                try:
                    pq.read_table(part)
                except (pa.ArrowException, OSError) as part_exc:
                    where, reason = part, first_line(part_exc)
                    break
            raise SgpoError(f"{where} could not be read ({reason}); {self.redo}") from None

    def output_fingerprint(self) -> str:
        return self.manifest()["output_fingerprint"]


def read_stage(run: str | Path, stage: str) -> pa.Table:
    return StageFiles(run, stage).read()


def read_manifests(run: str | Path, stages: list[str]) -> dict[str, dict]:
    """The manifests of complete stages; SgpoError naming what to run when one is incomplete."""
    files = {name: StageFiles(run, name) for name in stages}
    for stage in files.values():
        stage.require_complete()
    return {name: stage.manifest() for name, stage in files.items()}


def generate_config(run: str | Path) -> dict | None:
    """The generate stage's recorded config (data, generate, grader sections), or None when there is none."""
    manifest = StageFiles(run, "generate").manifest()
    return manifest["config"] if manifest else None


def export_view(run: str | Path, view: str, split: str = "train") -> pa.Table:
    """One exported view's split, after the export filters; never a fallback to unfiltered rows."""
    import pyarrow.parquet as pq

    export = StageFiles(run, "export")
    export.require_complete()
    files = sorted((export.dir / view).glob(f"{split}-*.parquet"))
    if not files:
        raise SgpoError(f"{export.dir} has no {view!r} view with a {split!r} split; export it "
                        f"(sgpo-data export --out {export.run} --view {view}) or pass its Parquet files")
    try:
        return pa.concat_tables([pq.read_table(f) for f in files])
    except (pa.ArrowException, OSError) as exc:
        raise SgpoError(f"{export.dir}/{view}: a {split!r} file could not be read ({first_line(exc)}); "
                        f"{export.redo}") from None


MANIFEST_KEYS = ("stage", "status", "config", "input_fingerprint", "identity", "num_shards")
COMPLETE_KEYS = ("rows", "errors", "statistics", "output_fingerprint")
MARKER_KEYS = ("rows", "errors", "input", "output")


def _read_json(path: Path, what: str, keys: tuple[str, ...], fix: str) -> dict:
    """A run folder's JSON record (a manifest, a marker): an object with `keys`, or one error naming the file."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = f"{exc.msg} (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else first_line(exc)
        raise SgpoError(f"{path}: the {what} is not readable JSON ({reason}; truncated or damaged?); {fix}") from None
    if not isinstance(record, dict):
        raise SgpoError(f"{path}: the {what} is not a JSON object (damaged or edited?); {fix}")
    if missing := [key for key in keys if key not in record]:
        raise SgpoError(f"{path}: the {what} lacks {', '.join(missing)} (damaged or edited?); {fix}")
    return record

