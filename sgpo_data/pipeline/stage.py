"""The stage protocol: what a stage does, apart from where it runs (the executors) and how its folder is kept
(the runner). A stage declares the columns it needs and adds, cuts its input into shards, and processes one
shard at a time. Adding a stage is one file with a `Stage` subclass and its `@STAGES.register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from sgpo_data.config import Recipe
from sgpo_data.registry import Registry
from sgpo_data.run_reader import StageFiles


@dataclass
class Shard:
    """One unit of work: its input rows (a table, or upstream parts read as one dataset) and their fingerprint.
    Picklable, so an executor can send it to another process."""

    index: int
    fingerprint: str
    rows: int  # units of work, for progress
    table: pa.Table | None = None
    paths: list[Path] = field(default_factory=list)

    @property
    def where(self) -> str:
        """The input's location, for error messages."""
        if not self.paths:
            return f"shard {self.index}"
        return str(self.paths[0] if len(self.paths) == 1 else self.paths[0].parent)

    def load(self) -> pa.Table:
        if self.table is not None:
            return self.table
        import pyarrow.dataset as ds

        return ds.dataset([str(p) for p in self.paths], format="parquet").to_table()


def shard_per_part(upstream: StageFiles) -> list[Shard]:
    """One shard per upstream part, fingerprinted by the part's output hash: a redone upstream shard redoes
    only its own shard here. Every part holds whole groups (generate shards by prompt)."""
    shards = []
    for i in range(upstream.manifest()["num_shards"]):
        marker = upstream.read_marker(i)
        shards.append(Shard(i, marker["output"], marker["rows"], paths=[upstream.part(i)]))
    return shards


@dataclass
class ShardOutput:
    table: pa.Table | None = None
    stats: dict = field(default_factory=dict)  # per-shard counters the stage's statistics() can merge
    path: Path | None = None  # instead of `table`: a Parquet file the stage wrote itself (with stats["tally"])


class Stage(ABC):
    name: ClassVar[str]
    upstream: ClassVar[str | None]  # the stage whose output this one reads; None: the prompts
    needs: ClassVar[tuple[str, ...]]  # input columns
    adds: ClassVar[tuple[pa.Field, ...]]  # output columns beyond the input's
    status_column: ClassVar[str | None] = None  # rows whose status is "error" are counted and retried
    error_kind_column: ClassVar[str | None] = None

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.run: Path | None = None  # the run folder, once the runner or an executor has set it
        self.advance = lambda n: None  # progress: the executor sets it; stages call it as rows are done

    def check(self) -> None:
        """Validate the stage's parts and options before any data or model is loaded."""

    @abstractmethod
    def config(self) -> dict:
        """What decides the stage's output: a change asks for --overwrite. Operational settings stay out."""

    @abstractmethod
    def plan(self, upstream: StageFiles | None) -> tuple[list[Shard], str]:
        """The shards, and the fingerprint of the whole input (the upstream's identity, or the prompts')."""

    def open(self, run: Path) -> None:
        """Prepare to process shards of `run` (engines load lazily, at the first request that is not cached)."""
        self.run = Path(run)

    @abstractmethod
    def process(self, shard: Shard) -> ShardOutput:
        """The shard's rows: the input's columns plus `adds`. A failed request is a row status; a failed service
        raises ServiceError after every result that came back is in the call cache."""

    def process_shards(self, shards: list[Shard]) -> Iterator[tuple[Shard, ShardOutput]]:
        """Each shard with its rows, as they are done (a stage that calls an engine streams its requests across
        shard boundaries: `sgpo_data.pipeline.stream`)."""
        for shard in shards:
            yield shard, self.process(shard)

    def close(self) -> None:
        """Free engines and workers."""

    def tally(self, table: pa.Table) -> dict:
        """Counters of one shard's output that add up across shards (kept in the shard's marker)."""
        from sgpo_data.stats import tally

        return tally(table)

    def statistics(self, shard_stats: list[dict]) -> dict:
        """The manifest's statistics over the whole output, from the shards' stats and their summed tallies: no
        stage reads its output back."""
        from sgpo_data.stats import summarize, summed_tallies

        return summarize(summed_tallies(shard_stats))

    def count_errors(self, table: pa.Table) -> dict[str, int]:
        """Rows in error by kind."""
        if self.status_column is None or self.status_column not in table.column_names:
            return {}
        import pyarrow.compute as pc

        failed = table.filter(pc.fill_null(pc.equal(table[self.status_column], "error"), False))
        kinds = pc.fill_null(failed[self.error_kind_column], "unknown").to_pylist()
        return {kind: kinds.count(kind) for kind in sorted(set(kinds))}

    def check_input(self, table: pa.Table, where: str) -> None:
        from sgpo_data.schema import require_columns

        require_columns(table, list(self.needs), where, f"run `sgpo-data {self.upstream} --out RUN` first")


STAGES: Registry[type[Stage]] = Registry("stage")
