"""`sgpo-data`: thin typer commands over the library's stages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.text import Text

from sgpo_data.config import load_recipe
from sgpo_data.errors import EXIT_ROWS_FAILED, EXIT_USAGE, SgpoError, first_line

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Offline SGPO datasets: generate, judge, score, export.")

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="run folder; a stage writes RUN/<stage>/")]
RecipeOpt = Annotated[Optional[Path], typer.Option("--recipe", "-r", help="YAML recipe (default: built-in defaults)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe key: dotted.key=value (repeatable)")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="redo a stage whose output was made with another config")]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", help="take shard i of N of the stage (i/N, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")]
RunShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", help="take shard i of N of each stage (i/N, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")]
ExecutorOpt = Annotated[str, typer.Option("--executor", help="where shards run: local, or ray (recipe section `ray`)")]
RayAddressOpt = Annotated[Optional[str], typer.Option("--ray-address", help="a running Ray cluster (default: ray.address)")]
ProgressOpt = Annotated[float, typer.Option(
    "--progress-every", help="seconds between progress lines when stderr is not a terminal", min=0.1)]


def _fail(exc: Exception) -> NoReturn:
    from sgpo_data.redaction import redact_url
    from sgpo_data_cli.render import console

    message = " ".join(line.strip() for line in str(exc).splitlines()) or type(exc).__name__  # always one line
    message = redact_url(message)  # whatever raised it, a password in a URL is not printed
    console.print(Text("error: ", style="red") + Text(message), soft_wrap=True)
    raise typer.Exit(getattr(exc, "exit_code", EXIT_USAGE))


def _names(kind: str) -> str:
    """The registered names of one kind of part, for a flag's help (the registry is the only list)."""
    from sgpo_data.config import registry

    return ", ".join(registry(kind).names())


def _check_out(out: Path, run_folder: bool = True) -> None:
    """--out is a folder this process can write, or a path where one can be made: not a file, nor inside one, nor
    inside another run folder, where that run's --overwrite would delete it. A run folder (`run_folder`) may not lie
    anywhere inside another run; any other output (a report, checkpoints) only not inside a run's stage folders."""
    import tempfile

    from sgpo_data.stages import STAGE_ORDER

    flag = f"--out {str(out)[:200]}"
    for path in (out, *out.parents):
        try:
            exists, is_dir = path.exists(), path.is_dir()
        except OSError as exc:  # e.g. a name too long for the filesystem
            raise SgpoError(f"{flag}: {exc.strerror or exc}; pass a folder") from None
        if exists and not is_dir:
            raise SgpoError(f"{flag}: {path} is a file, not a folder; pass a folder (it is made if missing)")
    chain = [out.resolve(), *out.resolve().parents]
    for inner, path in zip(chain, chain[1:]):
        is_run = any((path / s / "manifest.json").is_file() for s in STAGE_ORDER)
        if is_run and (run_folder or inner.name in (*STAGE_ORDER, "cache")):
            raise SgpoError(f"{flag} is inside the run folder {path}, whose --overwrite would delete it; pass a folder "
                            "outside that run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()  # unwritable, read-only or immutable folders fail here, not mid-run
    except OSError as exc:
        raise SgpoError(f"{flag}: cannot write there ({exc.strerror or first_line(exc)}); pass a folder you can "
                        "write to") from None


def _execute(stages: list[str], recipe_path: Path | None, out: Path, overrides: list[str] | None, overwrite: bool,
             shard: str | None = None, executor: str = "local", ray_address: str | None = None,
             progress_every: float = 30.0) -> None:
    from sgpo_data.pipeline.signals import Interrupted, stop_on_signals
    from sgpo_data_cli.render import RichProgress, console, progress_bar, source_table, summary_table

    started = time.perf_counter()
    try:
        with stop_on_signals():  # SIGTERM/SIGINT: answered requests kept, the lock released, exit 143/130
            recipe = load_recipe(recipe_path, overrides or [])
            from sgpo_data.pipeline import ShardSpec
            from sgpo_data.pipeline.executors import get_executor
            from sgpo_data.stages import check_recipe, run_stage
            from sgpo_data.pipeline.lock import RunLock

            check_recipe(recipe, stages)
            spec = ShardSpec.parse(shard)
            _check_out(out)
            runner = get_executor(executor, recipe.ray, ray_address)
            results = []
            with RunLock(out, spec.index, spec.count), progress_bar() as bar:
                progress = RichProgress(bar, progress_every)
                try:
                    for name in stages:
                        results.append(run_stage(name, recipe, out, shard=spec, overwrite=overwrite,
                                                 progress=progress, executor=runner))
                        if not results[-1].complete:
                            break  # the next stage needs the shards other processes are still working on
                finally:
                    progress.close()
    except SgpoError as exc:
        _fail(exc)
    except Interrupted as exc:
        console.print(Text(str(exc), style="yellow"), soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    last = results[-1]
    if last.complete:
        stats = last.manifest["statistics"]
        console.print(summary_table(stats, last.stage, str(out), time.perf_counter() - started))
        if (per_source := source_table(stats)) is not None:
            console.print(per_source)
    else:
        console.print(f"{last.stage}: this process ({shard}) finished its {last.processed} shard(s); the stage "
                      "completes when the other --shard processes finish theirs", soft_wrap=True)
    _exit_for_row_errors(results, out)


def _exit_for_row_errors(results, out: Path) -> None:
    """Exit 3 when rows are in error, in the stages run or upstream of them (a stage run on its own carries its
    upstream's failed rows along), naming them and how to retry; exit 0 only when none is."""
    from sgpo_data.run_reader import StageFiles
    from sgpo_data.stages import STAGE_ORDER
    from sgpo_data_cli.render import console, failed_rows

    upstream = STAGE_ORDER[: STAGE_ORDER.index(results[0].stage)] if results else []
    failed = {name: errors for name in upstream if (errors := (StageFiles(out, name).manifest() or {}).get("errors"))}
    failed.update({r.stage: r.errors for r in results if r.errors})
    if not failed:
        return
    total = sum(sum(kinds.values()) for kinds in failed.values())
    by_stage = "; ".join(f"{stage}: " + ", ".join(f"{kind} {n}" for kind, n in kinds.items())
                         for stage, kinds in failed.items())
    console.print(Text(f"{total} row(s) failed ({by_stage}); they are left out of the exported views. "
                       "Rerun the same command to retry exactly those rows (nothing that succeeded is paid again).",
                       style="yellow"), soft_wrap=True)
    for line in failed_rows(out, list(failed)):
        console.print("  " + line, soft_wrap=True, markup=False)
    raise typer.Exit(EXIT_ROWS_FAILED)


def export(
    out: OutOpt,
    recipe: RecipeOpt = None,
    set: SetOpt = None,
    overwrite: OverwriteOpt = False,
    view: Annotated[Optional[list[str]], typer.Option("--view", help=f"view to export (repeatable): {_names('view')}; the first is the default config (export.views)")] = None,
    push_to_hub: Annotated[Optional[str], typer.Option(help="upload RUN/export to this Hub dataset repo (owner/name)")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="visibility of a repo that push creates")] = True,
    revision: Annotated[Optional[str], typer.Option(help="branch to push to (created if missing)")] = None,
    commit_message: Annotated[Optional[str], typer.Option(help="commit message of the upload")] = None,
    token: Annotated[Optional[str], typer.Option(help="Hub token (default: $HF_TOKEN, then `hf auth login`)")] = None,
    push_with_failed_rows: Annotated[bool, typer.Option(
        help="push even though rows are in error (they are left out of the views and counted in the card)")] = False,
    shard: ShardOpt = None,
) -> None:
    """Write the views (Parquet + DatasetDict), dataset card and plots to RUN/export/; optionally push to the Hub.

    Rows in error, here or upstream, exit 3 and stop the push unless --push-with-failed-rows is given."""
    from sgpo_data_cli.render import console

    overrides = list(set or [])
    if view:
        overrides.append(f"export.views=[{', '.join(view)}]")
    if push_to_hub:  # a bad repo id or a missing token fails before any work or upload
        from sgpo_data.export.hub import check_repo_id, resolve_token

        try:
            check_repo_id(push_to_hub)
            token = resolve_token(token)
        except SgpoError as exc:
            _fail(exc)
    rows_failed = None
    try:
        _execute(["export"], recipe, out, overrides, overwrite, shard)
    except typer.Exit as exit_:
        if not (push_to_hub and exit_.exit_code == EXIT_ROWS_FAILED and push_with_failed_rows):
            if push_to_hub and exit_.exit_code == EXIT_ROWS_FAILED:
                console.print(f"not pushed to {push_to_hub}: rows are in error; rerun to retry them, or pass "
                              "--push-with-failed-rows", soft_wrap=True, markup=False)
            raise
        rows_failed = exit_
    if push_to_hub:
        from sgpo_data.export.hub import push_to_hub as push

        try:
            url = push(out / "export", push_to_hub, token=token, private=private, revision=revision,
                       commit_message=commit_message)
        except SgpoError as exc:
            _fail(exc)
        print(f"pushed {out / 'export'} to https://huggingface.co/datasets/{push_to_hub} ({url})")
    if rows_failed is not None:
        raise rows_failed


def _stage_command(stage):
    """The CLI command of a stage: its options, and the engine stages' executor options."""
    from sgpo_data.pipeline.stream import StreamingStage

    if issubclass(stage, StreamingStage):
        def command(out: OutOpt, recipe: RecipeOpt = None, set: SetOpt = None, overwrite: OverwriteOpt = False,
                    shard: ShardOpt = None, executor: ExecutorOpt = "local", ray_address: RayAddressOpt = None,
                    progress_every: ProgressOpt = 30.0) -> None:
            _execute([stage.name], recipe, out, set, overwrite, shard, executor, ray_address, progress_every)
    else:
        def command(out: OutOpt, recipe: RecipeOpt = None, set: SetOpt = None, overwrite: OverwriteOpt = False,
                    shard: ShardOpt = None) -> None:
            _execute([stage.name], recipe, out, set, overwrite, shard)
    command.__doc__ = stage.__doc__.split("\n\n")[0]
    return command


def _stage_commands() -> None:
    """One command per stage, in run order, from the stage list; a stage with options of its own (export's
    views and Hub upload) has its command written out."""
    from sgpo_data.stages import STAGES

    written = {"export": export}
    for stage in STAGES:
        app.command(stage.name)(written.get(stage.name) or _stage_command(stage))


_stage_commands()


@app.command()
def report(run: Annotated[Path, typer.Argument(help="run folder")],
           out: Annotated[Optional[Path], typer.Option("--out", "-o", help="default: RUN/report")] = None) -> None:
    """Plots of rewards, first-error positions, zero-std groups, accuracy per source and judge failures,
    and a one-page report.md that embeds them."""
    from sgpo_data.report import write_report

    try:
        _check_out(out or run / "report", run_folder=False)
        path = write_report(run, out)
    except SgpoError as exc:
        _fail(exc)
    print(f"wrote {path} and its plots")


def _evaluate_judge(config, data: str, subset, limit, seed: int, out: Path, overwrite: bool) -> dict:
    """eval-judge's work: the judge checked, the data sampled, --out checked, then every item not yet judged there
    judged and its prediction written as it comes; returns metrics.json's content."""
    from sgpo_data.judges.core import judging_for
    from sgpo_data.judges.evaluate import (Predictions, check_reads_no_truth, evaluate, evaluation_identity,
                                           load_processbench, sample)
    from sgpo_data.redaction import redact
    from sgpo_data_cli.render import console

    judging = judging_for(config)  # its engine loads at the first request
    step_judge = judging.judge
    try:
        check_reads_no_truth(step_judge, config.judge.name, config.judge.options)
        data_sets = {name: sample(items, limit, seed) for name, items in load_processbench(data, subset).items()}
        _check_out(out, run_folder=False)
        predictions = Predictions(out, evaluation_identity(config.judge, step_judge, data_sets, limit, seed),
                                  overwrite)
        try:
            if kept := sum(predictions.done(name, x) for name, items in data_sets.items() for x in items):
                console.print(f"resuming {out}: {kept} item(s) already judged are kept")
            found = evaluate(judging, data_sets, predictions,
                             lambda name, m: console.print(f"{name}: F1 {m['f1']} ({m['items']} items, "
                                                           f"{m['seconds']} s)"))
            result = {"data": data, "sample": {"limit": limit, "seed": seed},
                      "judge": {**config.judge.model_dump(exclude={"max_in_flight"}),
                                "loaded_model": step_judge.loaded_model_name()}, **found}
            result = redact(result)  # no password of a base_url
            predictions.finish(data_sets, result)
        finally:
            predictions.close()
    finally:
        judging.close()
    return result


@app.command("eval-judge")
def eval_judge(
    data: Annotated[str, typer.Option(help="ProcessBench-format data: Qwen/ProcessBench (Hub), a folder of "
                                           "<subset>.json files, or one JSON/JSONL file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for predictions.jsonl (written as items are "
                                      "judged; a rerun resumes), evaluation.json and metrics.json")],
    judge: Annotated[str, typer.Option(help=f"judge name: {_names('judge')}")] = "llm",
    judge_column: Annotated[Optional[str], typer.Option(
        help="labels judge: the column with the predictions (required; not 'label', the ground truth)")] = None,
    recipe: RecipeOpt = None,
    set: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a key of the judge section: options.mode=group, backend.name=openai, model=NAME, "
                      "backend.options.base_url=URL (repeatable)")] = None,
    subset: Annotated[Optional[list[str]], typer.Option(help="subset to evaluate (repeatable; default: all)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="a seeded random sample of this many items per subset", min=1)] = None,
    seed: Annotated[int, typer.Option(help="seed of the sample")] = 0,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="start afresh in an --out that holds another evaluation, deleting its predictions")] = False,
) -> None:
    """Measure a step judge on ProcessBench-format data: per subset the accuracy on erroneous and on correct
    solutions and their harmonic mean F1 (in %), where predictions fall, parse failures and cost. Predictions
    are written as they come; rerun the same command after an interruption to judge only what is left."""
    import signal

    from rich.console import Console

    from sgpo_data.pipeline.signals import Interrupted, stop_on_signals
    from sgpo_data_cli.render import console, judge_eval_table

    overrides = [f"judge.name={judge}"] + [s if s.startswith("judge.") else f"judge.{s}" for s in set or []]
    if judge_column is not None:
        overrides.append(f"judge.options.column={judge_column}")
    try:
        with stop_on_signals():  # SIGTERM/SIGINT: every line written so far stays
            result = _evaluate_judge(load_recipe(recipe, overrides), data, subset, limit, seed, out, overwrite)
    except SgpoError as exc:
        _fail(exc)
    except Interrupted as exc:
        console.print(Text(f"interrupted by {signal.Signals(exc.signum).name}: the items judged so far are in "
                           f"{out / 'predictions.jsonl'}; rerun the same command to resume", style="yellow"),
                      soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None  # 128 + the signal, as a shell reports it
    Console(stderr=True, width=max(console.width, 110)).print(judge_eval_table(result))  # wider than a pipe's 80
    console.print(f"wrote {out / 'metrics.json'} and {out / 'predictions.jsonl'}")


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="YAML recipe")],
    out: OutOpt,
    set: SetOpt = None,
    overwrite: OverwriteOpt = False,
    shard: RunShardOpt = None,
    executor: ExecutorOpt = "local",
    ray_address: RayAddressOpt = None,
    progress_every: ProgressOpt = 30.0,
) -> None:
    """All stages in order: generate, judge, score, export. Finished work is skipped; rows in error are retried.

    Exit codes: 0 every row ok; 2 bad input, config or a locked run folder; 3 rows in error (rerun to retry
    them); 4 a service failed and stopped the stage (rerun when it is back); 130/143 stopped by SIGINT/SIGTERM,
    every answered request saved (rerun to resume)."""
    from sgpo_data.stages import STAGE_ORDER

    _execute(list(STAGE_ORDER), recipe, out, set, overwrite, shard, executor, ray_address, progress_every)


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for checkpoints, metrics.jsonl and the final model "
                                                          "(OUT/final/)")],
    data: Annotated[Optional[str], typer.Option(help="run folder, Parquet file(s) or Hub dataset id (train.data)")] = None,
    model: Annotated[Optional[str], typer.Option(help="policy to start from (train.model)")] = None,
    advantage: Annotated[Optional[str], typer.Option(help="sgpo or grpo (train.advantage)")] = None,
    lora: Annotated[Optional[bool], typer.Option("--lora/--full", help="LoRA adapter or full fine-tuning")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda (train.device; auto: CUDA when torch "
                                                       "sees it)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the newest checkpoint in --out")] = False,
    recipe: RecipeOpt = None,
    set: SetOpt = None,
) -> None:
    """Offline SGPO (or GRPO) policy-gradient training on an exported run; writes OUT/final/."""
    from sgpo_data_cli.render import RichProgress, console, progress_bar

    flags = {"data": data, "model": model, "advantage": advantage, "lora": lora, "device": device}
    overrides = [f"train.{k}={v}" for k, v in flags.items() if v is not None] + list(set or [])
    started = time.perf_counter()
    try:
        cfg = load_recipe(recipe, overrides).train
        _check_out(out, run_folder=False)
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
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for dynamics.csv and dynamics.png")],
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

    started = time.perf_counter()
    try:
        score = load_recipe(None, set or []).score
        _check_out(out, run_folder=False)
        kwargs = {"init_success": tuple(init_success)} if init_success else {}
        if group_size:
            kwargs["group_sizes"] = tuple(group_size)
        rows = run_simulation(out, iterations=iterations, lr=lr, target=target,
                              reward_map=REWARD_MAPS.get(score.reward_map, cfg=score), **kwargs)
    except SgpoError as exc:
        _fail(exc)
    print(format_summary(rows))
    print(f"wrote {out / 'dynamics.csv'} and {out / 'dynamics.png'} in {time.perf_counter() - started:.1f} s")


@app.command()
def experiment(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for metrics.json, curves.csv and curves.png")],
    preset: Annotated[str, typer.Option(help="cpu (2 cores, about 27 min) or gpu (one GPU, bigger model)")] = "cpu",
    quick: Annotated[bool, typer.Option("--quick", help="the preset's short variant (cpu: under 5 min)")] = False,
    seeds: Annotated[Optional[int], typer.Option(help="seeds per arm (default: the preset's)", min=1)] = None,
    set: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a preset key: dotted.key=value, e.g. rl.lr=3e-4 (repeatable)")] = None,
) -> None:
    """Online RL of a small transformer from scratch on a checkable task: GRPO against SGPO with exact, noisy and
    position-free step credit, over seeds, with intervals and the simulate model's prediction."""
    from sgpo_data.experiment import run_experiment
    from sgpo_data.experiment.presets import resolve
    from sgpo_data_cli.render import console

    started = time.perf_counter()
    try:
        resolve(preset, quick, seeds, set or [])  # a bad key is refused before anything is written
        _check_out(out, run_folder=False)
        metrics = run_experiment(out, preset, quick, seeds, set or [],
                                 log=lambda line: console.print(f"[{time.perf_counter() - started:5.0f} s] {line}",
                                                                highlight=False, soft_wrap=True))
    except SgpoError as exc:
        _fail(exc)
    for name, setting in metrics["settings"].items():
        sim, measured = setting["simulate"], setting["measured_speedup_sgpo"].get("greedy")
        predicted = f"x{sim['speedup']:.2f}" if sim["speedup"] else f"nothing (target {sim['target']:.3f} not reached)"
        console.print(f"{name}: initial greedy {setting['initial']['greedy_acc']['mean']:.3f}, at T=1 "
                      f"{setting['initial']['sampled_acc']['mean']:.3f}; steps to +{metrics['config']['target_gain']}"
                      f" greedy, GRPO over SGPO: simulate predicts {predicted}, measured "
                      + (f"x{measured:.2f}" if measured else "n/a"), highlight=False, soft_wrap=True)
        for arm, s in setting["arms"].items():
            final, diff = s["greedy_final"], s.get("vs_grpo", {}).get("greedy_final")
            versus = f", vs GRPO {diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" if diff else ""
            console.print(f"  {arm:>11}: final greedy {final['mean']:.3f} [{final['low']:.3f}, {final['high']:.3f}]"
                          f"{versus}, steps to target {s['greedy_steps_censored']['mean']:.0f} "
                          f"({s['greedy_reached_target']}/{s['seeds']} reached), steps right before the first "
                          f"error {s['greedy_progress_final']['mean']:.2f}, zero-std groups "
                          f"{s['zero_std']['mean'] or 0:.2f}"
                          + (f", diverged {s['diverged']}" if s["diverged"] else ""), highlight=False, soft_wrap=True)
    console.print(f"wrote {out / 'metrics.json'}, curves.csv and curves.png in {time.perf_counter() - started:.0f} s")


def main() -> None:
    app()
