"""Where a stage's shards run: in this process, or on a Ray cluster. A stage knows nothing of either.

`--shard i/N` is not an executor: it picks which shards this process takes (the runner's ShardSpec), so N
processes under any scheduler fill one run folder; each of them can use either executor.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from sgpo_data.config import RayConfig
from sgpo_data.errors import SgpoError
from sgpo_data.pipeline.folder import StageFolder
from sgpo_data.pipeline.progress import Progress
from sgpo_data.pipeline.stage import Shard, Stage, check_output, count_errors
from sgpo_data.stats import tally


class Executor(Protocol):
    def run(self, stage: Stage, folder: StageFolder, shards: list[Shard], progress: Progress) -> None:
        """Process every shard and write it (rows, then marker) into `folder`."""


def _write(stage: Stage, folder: StageFolder, shards: list[Shard]) -> None:
    """Process the shards and write each one (rows, then marker) as soon as it is done. A shard is written on a
    thread of its own while the next one is processed (pyarrow encodes and hashes without the GIL); at most one
    write is in flight, so at most two shards' rows are held."""
    with ThreadPoolExecutor(1, thread_name_prefix="shard-writer") as writer:
        written: Future | None = None
        for shard, out in stage.process_shards(shards):
            check_output(stage, shard, out.table)
            stats = {"tally": tally(out.table), **out.stats}  # a stage's own tally replaces the generic one
            args = (shard.index, out.table, shard.fingerprint, count_errors(stage, out.table), stats)
            if written is not None:
                written.result()  # a failed write stops the stage here
            written = writer.submit(folder.write_shard, *args)
        if written is not None:
            written.result()


class LocalExecutor:
    """The shards in this process, with one engine (whose request window spans shard boundaries)."""

    def run(self, stage: Stage, folder: StageFolder, shards: list[Shard], progress: Progress) -> None:
        task = progress.task(stage.name, total=sum(s.rows for s in shards))
        stage.open(folder.run)
        stage.advance = lambda n: progress.advance(task, n)
        try:
            _write(stage, folder, shards)
        finally:
            stage.close()


class _ShardWorker:
    """A Ray actor: one stage (one engine) that processes the shards it is sent and writes them into the run."""

    def __init__(self, stage: Stage, run: str):
        self.stage, self.folder = stage, StageFolder(run, stage.name)
        self.stage.open(self.folder.run)

    def process(self, shard: Shard) -> int:
        _write(self.stage, self.folder, [shard])
        return shard.rows


class RayExecutor:
    """Shards as work items on a Ray cluster: `num_actors` actors, each holding one engine with the recipe's
    per-actor resources (`ray.num_gpus: 1` puts one vLLM or transformers engine on each GPU). Actors write
    into the run folder, which must be on a filesystem every node sees."""

    def __init__(self, cfg: RayConfig, address: str | None = None):
        self.cfg, self.address = cfg, address or cfg.address

    def run(self, stage: Stage, folder: StageFolder, shards: list[Shard], progress: Progress) -> None:
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise SgpoError("--executor ray needs Ray; install it: pip install 'sgpo-data[ray]'") from None
        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {"num_cpus": os.cpu_count()}
            ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
        task = progress.task(f"{stage.name} (ray)", total=sum(s.rows for s in shards))
        worker = ray.remote(num_cpus=self.cfg.num_cpus, num_gpus=self.cfg.num_gpus)(_ShardWorker)
        actors = [worker.remote(stage, str(folder.run)) for _ in range(min(self.cfg.num_actors, len(shards)))]
        try:
            for rows in ActorPool(actors).map_unordered(lambda actor, shard: actor.process.remote(shard), shards):
                progress.advance(task, rows)
        except ray.exceptions.RayTaskError as exc:  # a stage's own error, raised in an actor: show it as is
            cause = getattr(exc, "cause", None)
            if isinstance(cause, SgpoError):
                raise cause from None
            raise
        finally:
            for actor in actors:
                ray.kill(actor)


def get_executor(name: str, cfg: RayConfig, address: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(cfg, address)
    raise SgpoError(f"--executor {name!r}: valid executors are local, ray")
