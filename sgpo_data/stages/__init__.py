"""The stages of a run, in order; each reads the previous stage's folder and writes its own."""

from sgpo_data.stages.export import run_export
from sgpo_data.stages.generate import run_generate
from sgpo_data.stages.judge import run_judge
from sgpo_data.stages.progress import Progress
from sgpo_data.stages.run_folder import STAGE_ORDER, StageOutput
from sgpo_data.stages.score import run_score

STAGES = {"generate": run_generate, "judge": run_judge, "score": run_score, "export": run_export}


def run_all(recipe, out, overwrite: bool = False, progress: Progress | None = None) -> StageOutput:
    stage = None
    for name in STAGE_ORDER:
        stage = STAGES[name](recipe, out, overwrite=overwrite, progress=progress)
    return stage


__all__ = ["STAGES", "STAGE_ORDER", "Progress", "StageOutput", "run_all"]
