"""export: the scored rows as views for TRL, verl, stepwise PRM training and `datasets`.

RUN/export/
  part-00000.parquet          every contract column, every row (the run's record, unfiltered, rows in error too)
  <view>/<split>-00000-of-00001.parquet   each view after the export filters, split by prompt
  hf/<view>/                  a DatasetDict per view (save_to_disk)
  README.md, plots/, recipe.yaml          the dataset card, its plots, the configuration of every stage
Rows in error (a failed generate or judge request) are left out of every view, and counted in the manifest and
the card. The layout of everything but part-*/hf/ is the Hub repository's, so publishing uploads it as it is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sgpo_data.export import apply_filters, get_view, split_by_prompt
from sgpo_data.pipeline.folder import hash_json
from sgpo_data.pipeline.stage import STAGES, Shard, ShardOutput, Stage
from sgpo_data.prompts import conversation, recorded_recipe
from sgpo_data.run_reader import StageFiles, generate_config, read_manifests
from sgpo_data.schema import CONTRACT_COLUMNS, SCORE_SCHEMA, error_rows
from sgpo_data.stages.score import whole_upstream


@STAGES.register("export")
class ExportStage(Stage):
    name = "export"
    upstream = "score"
    needs = tuple(SCORE_SCHEMA.names)
    adds = ()

    def config(self) -> dict:
        return {"export": self.recipe.export.model_dump()}

    def plan(self, upstream: StageFiles) -> tuple[list[Shard], str]:
        return whole_upstream(upstream)

    def views(self) -> dict:
        cfg = self.recipe.export
        return {name: get_view(name, conversational=cfg.conversational) if name == "trl" else get_view(name)
                for name in cfg.views}

    def process(self, shard: Shard) -> ShardOutput:
        table = shard.load()
        self.check_input(table, shard.where)
        views = self.views()
        for view in views.values():
            view.check(table)  # a view the run cannot make fails before anything is written
        folder = StageFiles(self.run, self.name).dir
        failed = error_rows(table)
        counts = self._write_views(folder, table.filter(pa.array(~failed)), views)
        counts["rows_in_error_left_out"] = int(failed.sum())
        counts["truncated_left_out_of_chat_views"] = sum(getattr(v, "left_out", 0) for v in views.values())
        if self.recipe.export.card:
            self._write_card(folder, table, {name: list(counts["splits"]) for name in views}, counts)
        self.advance(table.num_rows)
        return ShardOutput(table.select(CONTRACT_COLUMNS), stats=counts)

    def statistics(self, table: pa.Table, shard_stats: list[dict]) -> dict:
        stats = dict(StageFiles(self.run, "score").manifest()["statistics"])
        stats["export"] = shard_stats[0]
        return stats

    def _write_views(self, folder: Path, table: pa.Table, views: dict) -> dict:
        cfg = self.recipe.export
        kept, filtered = apply_filters(
            table, drop_zero_advantage_groups=cfg.drop_zero_advantage_groups, only_all_negative=cfg.only_all_negative,
            min_response_tokens=cfg.min_response_tokens, max_response_tokens=cfg.max_response_tokens,
            dedupe_within_group=cfg.dedupe_within_group,
        )
        splits = split_by_prompt(kept, cfg.test_size, cfg.split_seed)
        prompts = {split: row_prompts(self.run, part) for split, part in splits.items()}
        rows: dict[str, dict[str, int]] = {}
        source = hash_json([StageFiles(self.run, "score").output_fingerprint(), cfg.model_dump()])  # once, not per view
        for name, view in views.items():
            built = {split: view.build(part, prompts[split]) for split, part in splits.items()}
            rows[name] = {split: t.num_rows for split, t in built.items()}
            if "parquet" in cfg.formats:
                target = folder / name
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                for split, t in built.items():
                    pq.write_table(t, target / f"{split}-00000-of-00001.parquet")
            if "hf" in cfg.formats:
                _save_hf(built, folder / "hf" / name, hash_json([source, name]))
        (folder / "recipe.yaml").write_text(yaml.safe_dump(self._recipe_of_run(), sort_keys=False))
        return {"filters": filtered, "rows_after_filters": kept.num_rows,
                "splits": {split: part.num_rows for split, part in splits.items()}, "views": rows}

    def _recipe_of_run(self) -> dict:
        """The configuration every stage actually ran with, as one recipe."""
        tree = {}
        for manifest in read_manifests(self.run, ["generate", "judge", "score"]).values():
            tree.update(manifest["config"])
        tree["export"] = self.recipe.export.model_dump()
        return tree

    def _write_card(self, folder: Path, table: pa.Table, views: dict[str, list[str]], counts: dict) -> None:
        from sgpo_data.card import render_card
        from sgpo_data.report import make_plots

        stats = StageFiles(self.run, "score").manifest()["statistics"]
        scored = table.filter(pa.array(~error_rows(table)))
        plots = make_plots(scored, stats, folder / "plots")
        relative = {stem: f"plots/{path.name}" for stem, path in plots.items()}
        (folder / "README.md").write_text(render_card(self.run, views, relative, license=self.recipe.export.license,
                                                      export_counts=counts, language=self.recipe.export.language))


def row_prompts(run: Path, table: pa.Table) -> list[list[dict]]:
    """The chat messages each row's policy saw, rebuilt from the generate stage's recorded config."""
    generate = recorded_recipe(generate_config(run)).generate
    return [conversation(generate, problem) for problem in table["problem"].to_pylist()]


def _save_hf(splits: dict[str, pa.Table], target: Path, fingerprint: str) -> None:
    """A DatasetDict saved to disk. The fingerprint is the view's identity (its source run, the export config and
    the view), given so that `datasets` does not hash the whole table to make one."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    DatasetDict({split: Dataset(t, fingerprint=hash_json([fingerprint, split]))
                 for split, t in splits.items()}).save_to_disk(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
