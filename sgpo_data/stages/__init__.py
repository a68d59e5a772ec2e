"""The stages of a run, in order; each reads the previous stage's folder and writes its own."""

from sgpo_data.stages.export import run_export
from sgpo_data.stages.generate import run_generate
from sgpo_data.stages.judge import run_judge
from sgpo_data.stages.progress import Progress
from sgpo_data.stages.run_folder import STAGE_ORDER, StageOutput
from sgpo_data.stages.score import run_score

STAGES = {"generate": run_generate, "judge": run_judge, "score": run_score, "export": run_export}


def check_recipe(recipe) -> None:
    """Every part name resolves, before any data or model is loaded."""
    from sgpo_data.backends import BACKENDS
    from sgpo_data.graders import GRADERS
    from sgpo_data.judges import JUDGES
    from sgpo_data.segmenters import SEGMENTERS

    BACKENDS.check(recipe.generate.backend, "generate.backend")
    GRADERS.check(recipe.grader.name, "grader.name")
    JUDGES.check(recipe.judge.name, "judge.name")
    BACKENDS.check(recipe.judge.backend, "judge.backend")
    SEGMENTERS.check(recipe.judge.segmenter, "judge.segmenter")


def run_all(recipe, out, overwrite: bool = False, progress: Progress | None = None) -> StageOutput:
    check_recipe(recipe)
    stage = None
    for name in STAGE_ORDER:
        stage = STAGES[name](recipe, out, overwrite=overwrite, progress=progress)
    return stage


__all__ = ["STAGES", "STAGE_ORDER", "check_recipe", "Progress", "StageOutput", "run_all"]
