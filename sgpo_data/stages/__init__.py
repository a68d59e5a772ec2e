"""The stages of a run, in order, one file each; importing this package registers them in `pipeline.STAGES`.
Each reads the previous stage's folder and writes its own; the runner (`sgpo_data.pipeline`) does the rest."""

from sgpo_data.pipeline import Progress, ShardSpec, StageResult, check_recipe, run_stage
from sgpo_data.run_reader import STAGE_ORDER
from sgpo_data.stages import export, generate, judge, score  # noqa: F401  (registration)


def run_all(recipe, out, overwrite: bool = False, progress: Progress | None = None, shard: ShardSpec = ShardSpec(),
            executor=None) -> list[StageResult]:
    """Every stage in order, in this process."""
    check_recipe(recipe)
    return [run_stage(name, recipe, out, shard=shard, overwrite=overwrite, progress=progress, executor=executor)
            for name in STAGE_ORDER]


__all__ = ["STAGE_ORDER", "check_recipe", "run_all", "run_stage"]
