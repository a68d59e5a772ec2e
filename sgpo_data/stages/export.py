"""export: the scored rows as views for TRL, verl, stepwise PRM training and `datasets`.

RUN/export/
  part-00000.parquet          every contract column, every row (the run's record, unfiltered)
  <view>/<split>-00000-of-00001.parquet   each view after the export filters, split by prompt
  hf/<view>/                  a DatasetDict per view (save_to_disk)
  README.md, plots/, recipe.yaml          the dataset card, its plots, the configuration of every stage
The layout of everything but part-*/hf/ is the Hub repository's, so publishing uploads the folder as it is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sgpo_data.config import Recipe
from sgpo_data.export import apply_filters, get_view, split_by_prompt
from sgpo_data.schema import CONTRACT_COLUMNS
from sgpo_data.stages.progress import Progress
from sgpo_data.stages.run_folder import StageOutput


def run_export(recipe: Recipe, out, overwrite: bool = False, progress: Progress | None = None) -> StageOutput:
    cfg = recipe.export
    upstream = StageOutput(out, "score")
    upstream.require_complete()
    table = upstream.read()
    views = {name: get_view(name, conversational=cfg.conversational) if name == "trl" else get_view(name)
             for name in cfg.views}
    for view in views.values():
        view.check(table)  # a view the run cannot make fails before anything is written
    stage = StageOutput(out, "export")
    stage.start({"export": cfg.model_dump()}, upstream.output_fingerprint(), 1, overwrite)
    counts = {}
    if not stage.is_done(0):
        counts = _write_views(stage, table, views, recipe)
        if cfg.card:
            _write_card(stage, table, {name: list(counts["splits"]) for name in views}, cfg.license)
        stage.write_shard(0, table.select(CONTRACT_COLUMNS))  # written last: its marker completes the stage
    stats = dict(upstream.manifest()["statistics"])
    stats["export"] = counts or (stage.manifest().get("statistics") or {}).get("export", {})
    stage.finish(stats)
    return stage


def row_prompts(run: Path, table: pa.Table) -> list[list[dict]]:
    """The chat messages each row's policy saw, rebuilt from the generate stage's recorded config."""
    from sgpo_data.stages.generate import conversation, recorded_recipe

    recipe = recorded_recipe(StageOutput(run, "generate").manifest()["config"])
    return [conversation(recipe, problem) for problem in table["problem"].to_pylist()]


def _write_views(stage: StageOutput, table: pa.Table, views: dict, recipe: Recipe) -> dict:
    cfg = recipe.export
    kept, filtered = apply_filters(
        table, drop_zero_advantage_groups=cfg.drop_zero_advantage_groups, only_all_negative=cfg.only_all_negative,
        min_response_tokens=cfg.min_response_tokens, max_response_tokens=cfg.max_response_tokens,
        dedupe_within_group=cfg.dedupe_within_group,
    )
    splits = split_by_prompt(kept, cfg.test_size, cfg.split_seed)
    prompts = {split: row_prompts(stage.run, part) for split, part in splits.items()}
    rows: dict[str, dict[str, int]] = {}
    for name, view in views.items():
        built = {split: view.build(part, prompts[split]) for split, part in splits.items()}
        rows[name] = {split: t.num_rows for split, t in built.items()}
        if "parquet" in cfg.formats:
            folder = stage.dir / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            for split, t in built.items():
                pq.write_table(t, folder / f"{split}-00000-of-00001.parquet")
        if "hf" in cfg.formats:
            _save_hf(built, stage.dir / "hf" / name)
    (stage.dir / "recipe.yaml").write_text(yaml.safe_dump(_recipe_of_run(stage.run, recipe), sort_keys=False))
    return {"filters": filtered, "rows_after_filters": kept.num_rows,
            "splits": {split: part.num_rows for split, part in splits.items()}, "views": rows}


def _recipe_of_run(run: Path, recipe: Recipe) -> dict:
    """The configuration every stage actually ran with, as one recipe."""
    tree = {}
    for stage in ("generate", "judge", "score"):
        tree.update(StageOutput(run, stage).manifest()["config"])
    tree["export"] = recipe.export.model_dump()
    return tree


def _write_card(stage: StageOutput, table: pa.Table, views: dict[str, list[str]], license: str) -> None:
    from sgpo_data.card import render_card
    from sgpo_data.report import make_plots

    stats = StageOutput(stage.run, "score").manifest()["statistics"]
    plots = make_plots(table, stats, stage.dir / "plots")
    relative = {stem: f"plots/{path.name}" for stem, path in plots.items()}
    (stage.dir / "README.md").write_text(render_card(stage.run, views, relative, license=license))


def _save_hf(splits: dict[str, pa.Table], target: Path) -> None:
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    DatasetDict({split: Dataset(t) for split, t in splits.items()}).save_to_disk(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
