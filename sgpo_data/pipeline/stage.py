"""The stage protocol: what a stage does, apart from where it runs (the executors) and how its folder is kept
(the runner). A stage declares the columns it needs and adds, cuts its input into shards, and processes one
shard at a time. Adding a stage is one file with a `Stage` subclass, listed in `sgpo_data.stages`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from sgpo_data.config import Recipe
from sgpo_data.errors import SgpoError
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
    table: pa.Table | None = None  # None: a job whose results are not rows of a stage (the online rewards')
    stats: dict = field(default_factory=dict)  # per-shard counters the stage's statistics() can merge; a "tally"
    # here replaces the runner's own count of the rows


class Stage(ABC):
    """A stage: the columns it `needs` and `adds` (the runner checks both), its `config()` (what decides its rows),
    `plan()` (its shards) and `process()` (one shard's rows). `open`, `close`, `check` and `statistics` are there
    to override when a stage needs them."""

    name: ClassVar[str]
    upstream: ClassVar[str | None]  # the stage whose output this one reads; None: the prompts
    needs: ClassVar[tuple[str, ...]]  # input columns
    adds: ClassVar[tuple[pa.Field, ...]]  # output columns beyond the input's
    status_column: ClassVar[str | None] = None  # rows whose status is "error" are counted (by <stage>_error_kind)
    # and retried by a plain rerun

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.run: Path | None = None  # the run folder, once the runner or an executor has set it
        self.advance = lambda n: None  # progress: the executor sets it; stages call it as rows are done

    def check(self) -> None:
        """What the recipe alone cannot show (a tokenizer that must load), before any stage runs; keeps no state."""

    @abstractmethod
    def config(self) -> dict:
        """What decides the stage's output: a change asks for --overwrite. Operational settings stay out."""

    @abstractmethod
    def plan(self, upstream: StageFiles | None) -> tuple[list[Shard], str]:
        """The shards, and the fingerprint of the whole input (the upstream's identity, or the prompts')."""

    @abstractmethod
    def process(self, shard: Shard) -> ShardOutput:
        """The shard's rows: the input's columns plus `adds`. A failed request is a row status; a failed service
        raises ServiceError after every result that came back is in the call cache."""

    def open(self, run: Path) -> None:
        """Prepare to process shards of `run` (engines load lazily, at the first request that is not cached)."""
        self.run = Path(run)

    def close(self) -> None:
        """Free engines and workers."""

    def process_shards(self, shards: list[Shard]) -> Iterator[tuple[Shard, ShardOutput]]:
        """Each shard with its rows, as they are done (an engine stage streams its requests across shard
        boundaries: `sgpo_data.pipeline.stream`)."""
        for shard in shards:
            yield shard, self.process(shard)

    def statistics(self, shard_stats: list[dict]) -> dict:
        """The manifest's statistics over the whole output, from the shards' stats and their summed tallies: no
        stage reads its output back."""
        from sgpo_data.stats import summarize, summed_tallies

        return summarize(summed_tallies(shard_stats))


def stage_order(stages: list[type[Stage]]) -> list[type[Stage]]:
    """The stages in run order, from each one's `upstream`: the one that reads the prompts first."""
    by_upstream = {stage.upstream: stage for stage in stages}
    ordered, upstream = [], None
    while upstream in by_upstream:
        ordered.append(by_upstream.pop(upstream))
        upstream = ordered[-1].name
    if by_upstream:
        raise SgpoError(f"stage(s) {', '.join(s.name for s in by_upstream.values())} read from no stage of the run")
    return ordered


def require_input(stage: Stage, shard: Shard) -> None:
    """The shard's input has every column the stage needs (read from the schema alone)."""
    from sgpo_data.schema import require_columns

    if shard.table is not None:
        schema = shard.table.schema
    else:
        import pyarrow.parquet as pq

        schema = pq.read_schema(shard.paths[0])
    require_columns(schema.empty_table(), list(stage.needs), shard.where,
                    f"run `sgpo-data {stage.upstream} --out RUN` first" if stage.upstream else "fix the prompts")


def check_output(stage: Stage, shard: Shard, table: pa.Table) -> None:
    """A stage keeps its input's columns and adds its own: anything else is a fault of the stage, said in one line
    before the shard is written."""
    missing = [c for c in (*stage.needs, *(f.name for f in stage.adds)) if c not in table.column_names]
    if missing:
        raise SgpoError(f"stage {stage.name}: the rows of {shard.where} lack column(s) {', '.join(missing)}; a stage "
                        "keeps the columns it needs and adds its own")


def count_errors(stage: Stage, table: pa.Table) -> dict[str, int]:
    """Rows in error by kind (`<stage>_error_kind`)."""
    if stage.status_column is None or stage.status_column not in table.column_names:
        return {}
    import pyarrow.compute as pc

    failed = table.filter(pc.fill_null(pc.equal(table[stage.status_column], "error"), False))
    kinds = pc.fill_null(failed[f"{stage.name}_error_kind"], "unknown").to_pylist()
    return {kind: kinds.count(kind) for kind in sorted(set(kinds))}
