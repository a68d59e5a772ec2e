"""The stage protocol (stage.py), the runner that owns the run folder (runner.py, folder.py, lock.py) and the
executors that decide where shards run (executors.py). The stages themselves are in `sgpo_data.stages`, which
this package never imports."""

from sgpo_data.pipeline.progress import Progress
from sgpo_data.pipeline.runner import ShardSpec, StageResult
from sgpo_data.pipeline.stage import Shard, ShardOutput, Stage

__all__ = ["Progress", "Shard", "ShardOutput", "ShardSpec", "Stage", "StageResult"]
