"""`sgpo-data`: thin typer commands over the library's stages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.text import Text

from sgpo_data.config import load_recipe
from sgpo_data.errors import SgpoError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Offline SGPO datasets: generate, judge, score, export.")

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="run folder; each stage writes RUN/<stage>/")]
RecipeOpt = Annotated[Optional[Path], typer.Option("--recipe", "-r", help="YAML recipe (default: built-in defaults)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe key: dotted.key=value (repeatable)")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="redo a stage whose output was made with another config")]


def _fail(exc: Exception) -> NoReturn:
    from sgpo_data_cli.render import console

    console.print(Text("error: ", style="red") + Text(str(exc)), soft_wrap=True)
    raise typer.Exit(2)


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
        _fail(exc)
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
def export(
    out: OutOpt,
    recipe: RecipeOpt = None,
    set: SetOpt = None,
    overwrite: OverwriteOpt = False,
    format: Annotated[Optional[list[str]], typer.Option("--format", help="view to export (repeatable): flat, grouped, trl, verl, stepwise")] = None,
    push_to_hub: Annotated[Optional[str], typer.Option(help="upload RUN/export to this Hub dataset repo (owner/name)")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="visibility of a repo that push creates")] = True,
    revision: Annotated[Optional[str], typer.Option(help="branch to push to (created if missing)")] = None,
    commit_message: Annotated[Optional[str], typer.Option(help="commit message of the upload")] = None,
    token: Annotated[Optional[str], typer.Option(help="Hub token (default: $HF_TOKEN, then `hf auth login`)")] = None,
) -> None:
    """Write the views (Parquet + DatasetDict), dataset card and plots to RUN/export/; optionally push to the Hub."""
    overrides = list(set or [])
    if format:
        overrides.append(f"export.views=[{', '.join(format)}]")
    if push_to_hub:  # a bad repo id or a missing token fails before any work or upload
        from sgpo_data.export.hub import check_repo_id, resolve_token

        try:
            check_repo_id(push_to_hub)
            token = resolve_token(token)
        except SgpoError as exc:
            _fail(exc)
    _execute(["export"], recipe, out, overrides, overwrite)
    if push_to_hub:
        from sgpo_data.export.hub import push_to_hub as push

        try:
            url = push(out / "export", push_to_hub, token=token, private=private, revision=revision,
                       commit_message=commit_message)
        except SgpoError as exc:
            _fail(exc)
        print(f"pushed {out / 'export'} to https://huggingface.co/datasets/{push_to_hub} ({url})")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="run folder")],
           out: Annotated[Optional[Path], typer.Option("--out", "-o", help="default: RUN/report")] = None) -> None:
    """Plots of rewards, first-error positions, zero-std groups, accuracy per source and judge failures,
    and a one-page report.md that embeds them."""
    from sgpo_data.report import write_report

    try:
        path = write_report(run, out)
    except SgpoError as exc:
        _fail(exc)
    print(f"wrote {path} and its plots")


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
def train(
    out: OutOpt,
    data: Annotated[Optional[str], typer.Option(help="run folder, Parquet file(s) or Hub dataset id (train.data)")] = None,
    model: Annotated[Optional[str], typer.Option(help="policy to start from (train.model)")] = None,
    advantage: Annotated[Optional[str], typer.Option(help="sgpo or grpo (train.advantage)")] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--full", help="LoRA adapter or full fine-tuning")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the newest checkpoint in --out")] = False,
    recipe: RecipeOpt = None,
    set: SetOpt = None,
) -> None:
    """Offline SGPO (or GRPO) policy-gradient training on an exported run; writes OUT/final/."""
    from sgpo_data_cli.render import RichProgress, console, progress_bar

    flags = {"data": data, "model": model, "advantage": advantage, "lora": lora}
    overrides = [f"train.{k}={v}" for k, v in flags.items() if v is not None] + list(set or [])
    started = time.perf_counter()
    try:
        cfg = load_recipe(recipe, overrides).train
        from sgpo_data.train import train as run_training

        with progress_bar() as bar:
            summary = run_training(cfg, out, resume=resume, progress=RichProgress(bar))
    except SgpoError as exc:
        _fail(exc)
    counts = summary["data"]
    console.print(f"trained {summary['steps']} steps on {summary['examples']} rows "
                  f"({counts['zero_advantage_skipped']} zero-advantage rows skipped, "
                  f"{counts['logprobs_from_initial_policy']} behaviour log-probs computed from the initial policy) "
                  f"in {time.perf_counter() - started:.0f} s → {summary['final_model']}")
    for evaluation in summary["evaluations"]:
        console.print(f"eval at step {evaluation['step']}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in evaluation.items() if k not in ("step", "problems", "samples")))


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
        _fail(exc)
    print(format_summary(rows))
    print(f"wrote {out / 'dynamics.csv'} and {out / 'dynamics.png'} in {time.perf_counter() - started:.1f} s")


def main() -> None:
    app()
