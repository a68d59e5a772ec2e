"""The stage protocol (stage.py), the runner that owns the run folder (runner.py, folder.py, lock.py) and the
executors that decide where shards run (executors.py). The stages themselves are in `sgpo_data.stages`."""

from sgpo_data.pipeline.progress import Progress
from sgpo_data.pipeline.runner import ShardSpec, StageResult, check_recipe, run_stage
from sgpo_data.pipeline.stage import STAGES, Shard, ShardOutput, Stage

__all__ = ["Progress", "STAGES", "Shard", "ShardOutput", "ShardSpec", "Stage", "StageResult", "check_recipe",
           "run_stage"]
