"""`sgpo-data`: thin typer commands over the library's stages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from sgpo_data.config import load_recipe
from sgpo_data.errors import SgpoError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Offline SGPO datasets: generate, judge, score, export.")

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="run folder; each stage writes RUN/<stage>/")]
RecipeOpt = Annotated[Optional[Path], typer.Option("--recipe", "-r", help="YAML recipe (default: built-in defaults)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe key: dotted.key=value (repeatable)")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="redo a stage whose output was made with another config")]


def _execute(stages: list[str], recipe_path: Path | None, out: Path, overrides: list[str] | None, overwrite: bool) -> None:
    from sgpo_data_cli.render import RichProgress, console, progress_bar, source_table, summary_table

    started = time.perf_counter()
    try:
        recipe = load_recipe(recipe_path, overrides or [])
        from sgpo_data.stages import STAGES, check_recipe

        check_recipe(recipe)
        with progress_bar() as bar:
            progress = RichProgress(bar)
            for name in stages:
                stage = STAGES[name](recipe, out, overwrite=overwrite, progress=progress)
    except SgpoError as exc:
        console.print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
        raise typer.Exit(2) from None
    stats = stage.manifest()["statistics"]
    console.print(summary_table(stats, stages[-1], str(out), time.perf_counter() - started))
    if (per_source := source_table(stats)) is not None:
        console.print(per_source)


@app.command()
def generate(out: OutOpt, recipe: RecipeOpt = None, set: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Sample G responses per prompt and grade them."""
    _execute(["generate"], recipe, out, set, overwrite)


@app.command()
def judge(out: OutOpt, recipe: RecipeOpt = None, set: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Cut responses into steps and find the first wrong step of each wrong one."""
    _execute(["judge"], recipe, out, set, overwrite)


@app.command()
def score(out: OutOpt, recipe: RecipeOpt = None, set: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """SGPO rewards and GRPO/SGPO advantages."""
    _execute(["score"], recipe, out, set, overwrite)


@app.command()
def export(out: OutOpt, recipe: RecipeOpt = None, set: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Write Parquet and a Hugging Face DatasetDict to RUN/export/."""
    _execute(["export"], recipe, out, set, overwrite)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe")],
    out: OutOpt,
    set: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """All stages in order: generate, judge, score, export. Finished work is skipped."""
    from sgpo_data.stages import STAGE_ORDER

    _execute(list(STAGE_ORDER), recipe, out, set, overwrite)


@app.command()
def simulate(
    out: OutOpt,
    init_success: Annotated[Optional[list[float]], typer.Option(help="initial success rates (repeatable)")] = None,
    group_size: Annotated[Optional[list[int]], typer.Option(help="group sizes G (repeatable)")] = None,
    iterations: Annotated[int, typer.Option(help="policy-gradient iterations")] = 300,
    lr: Annotated[float, typer.Option(help="learning rate")] = 0.25,
    target: Annotated[float, typer.Option(help="success rate whose first crossing is counted")] = 0.8,
    set: SetOpt = None,
) -> None:
    """GRPO vs SGPO in the two-step reasoning model: exact and Monte-Carlo dynamics, CSV + PNG.

    The SGPO reward map comes from the recipe's score section (e.g. --set score.reward_map=linear)."""
    from sgpo_data.scoring.rewards import REWARD_MAPS
    from sgpo_data.simulate import format_summary, run_simulation
    from sgpo_data_cli.render import console

    started = time.perf_counter()
    try:
        score = load_recipe(None, set or []).score
        kwargs = {"init_success": tuple(init_success)} if init_success else {}
        if group_size:
            kwargs["group_sizes"] = tuple(group_size)
        rows = run_simulation(out, iterations=iterations, lr=lr, target=target,
                              reward_map=REWARD_MAPS.get(score.reward_map, cfg=score), **kwargs)
    except SgpoError as exc:
        console.print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
        raise typer.Exit(2) from None
    print(format_summary(rows))
    print(f"wrote {out / 'dynamics.csv'} and {out / 'dynamics.png'} in {time.perf_counter() - started:.1f} s")


def main() -> None:
    app()
