"""The stages of a run, one file each, listed in STAGES; their order follows each one's `upstream`. Each reads the
previous stage's folder and writes its own; the runner (`sgpo_data.pipeline`) does the rest. A step that makes
side outputs from a complete stage (export's views, card and DatasetDicts) runs after it."""

from __future__ import annotations

from pathlib import Path

from sgpo_data.config import Recipe
from sgpo_data.errors import SgpoError
from sgpo_data.pipeline import Progress, ShardSpec, StageResult
from sgpo_data.pipeline import runner
from sgpo_data.pipeline.stage import Stage, stage_order
from sgpo_data.run_reader import StageFiles
from sgpo_data.stages.export import ExportStage
from sgpo_data.stages.generate import GenerateStage
from sgpo_data.stages.judge import JudgeStage
from sgpo_data.stages.publish import publish as publish_views
from sgpo_data.stages.score import ScoreStage

STAGES: list[type[Stage]] = stage_order([GenerateStage, JudgeStage, ScoreStage, ExportStage])
STAGE_ORDER = [stage.name for stage in STAGES]
AFTER = {ExportStage.name: publish_views}  # side outputs made once the stage is complete: (recipe, run) -> counts


def get_stage(name: str) -> type[Stage]:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise SgpoError(f"unknown stage {name!r}; valid stages: {', '.join(STAGE_ORDER)}")


def check_recipe(recipe: Recipe, stages: list[str] | None = None) -> None:
    """What the recipe alone cannot show (a tokenizer that must load), for every stage to run, before any runs."""
    for name in stages or STAGE_ORDER:
        get_stage(name)(recipe).check()


def run_stage(name: str, recipe: Recipe, out: str | Path, shard: ShardSpec = ShardSpec(), overwrite: bool = False,
              progress: Progress | None = None, executor=None) -> StageResult:
    """One stage into the run folder `out`, then its side outputs once it is complete."""
    result = runner.run_stage(get_stage(name)(recipe), out, shard=shard, overwrite=overwrite, progress=progress,
                              executor=executor)
    if result.complete and name in AFTER:
        AFTER[name](recipe, out)
        result.manifest = StageFiles(out, name).manifest()
    return result


def run_all(recipe: Recipe, out: str | Path, overwrite: bool = False, progress: Progress | None = None,
            shard: ShardSpec = ShardSpec(), executor=None) -> list[StageResult]:
    """Every stage in order, in this process."""
    check_recipe(recipe)
    return [run_stage(name, recipe, out, shard=shard, overwrite=overwrite, progress=progress, executor=executor)
            for name in STAGE_ORDER]


__all__ = ["STAGES", "STAGE_ORDER", "check_recipe", "get_stage", "run_all", "run_stage"]
