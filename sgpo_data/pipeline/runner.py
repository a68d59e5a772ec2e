"""The runner owns the run folder: it checks the upstream, fingerprints config and input, finds the shards that
need work (this process's share of them under `--shard i/N`), hands them to an executor, and marks the stage
complete when every shard is done. Stages never touch markers, manifests or the lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sgpo_data.errors import SgpoError
from sgpo_data.pipeline.executors import Executor, LocalExecutor
from sgpo_data.pipeline.folder import StageFolder, total_errors
from sgpo_data.pipeline.progress import Progress
from sgpo_data.pipeline.stage import Stage, require_input
from sgpo_data.run_reader import StageFiles


@dataclass(frozen=True)
class ShardSpec:
    """This process's share of every stage's shards: those whose index is `index` modulo `count`."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> "ShardSpec":
        if not text:
            return cls()
        match = re.fullmatch(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*", text)  # int() of a 5000-digit number fails
        if not match or not int(match[1]) < int(match[2]):
            raise SgpoError(f"--shard {text!r}: expected i/N with 0 <= i < N, e.g. --shard 0/4 "
                            "(Slurm: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
        return cls(int(match[1]), int(match[2]))

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index


@dataclass
class StageResult:
    stage: str
    manifest: dict | None  # the complete stage's manifest; None while other processes' shards are pending
    errors: dict[str, int]  # rows in error by kind (the whole stage when complete, else this process's shards)
    processed: int  # shards this process worked on

    @property
    def complete(self) -> bool:
        return self.manifest is not None


def run_stage(stage: Stage, run: str | Path, shard: ShardSpec = ShardSpec(), overwrite: bool = False,
              progress: Progress | None = None, executor: Executor | None = None) -> StageResult:
    """Run `stage` into the run folder: its upstream must be complete, its input must have the columns it needs,
    and every shard it writes must keep them and add its own."""
    folder = StageFolder(run, stage.name, stage.upstream)
    stage.run = folder.run
    upstream = None
    if stage.upstream:
        upstream = StageFiles(run, stage.upstream)
        upstream.require_complete()
    shards, input_fingerprint = stage.plan(upstream)
    folder.start(stage.config(), input_fingerprint, len(shards), overwrite)
    inputs = {s.index: s.fingerprint for s in shards}
    pending = [s for s in shards if shard.owns(s.index) and folder.needs_work(s.index, s.fingerprint)]
    if pending:
        for s in pending:
            require_input(stage, s)
        folder.reopen()
        (executor or LocalExecutor()).run(stage, folder, pending, progress or Progress())

    def statistics(markers: dict[int, dict]) -> dict:
        return stage.statistics([markers[i]["stats"] for i in sorted(markers)])

    manifest = folder.finish(inputs, statistics)
    if manifest is not None:
        errors = manifest["errors"]
    else:  # other processes' shards are pending: this process's own
        errors = total_errors(m for i in inputs if shard.owns(i) and (m := folder.read_marker(i)))
    return StageResult(stage.name, manifest, errors, len(pending))
