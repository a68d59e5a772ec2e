"""The export stage's publish step: once every score part is in the run's record (RUN/export/part-*), the views
for TRL, verl, stepwise PRM training and `datasets`, split by prompt, the dataset card and its plots.

RUN/export/
  part-*.parquet              the stage's output: every contract column, every row (rows in error too)
  <view>/<split>-00000-of-00001.parquet   each view after the export filters, split by prompt
  hf/<view>/                  a DatasetDict per view (save_to_disk)
  README.md, plots/, recipe.yaml          the dataset card, its plots, the configuration of every stage
  published.json              what the views were made from, and their counts
Rows in error (a failed generate or judge request) are left out of every view, and counted in the manifest and
the card. The layout of everything but part-*/hf/ is the Hub repository's, so publishing uploads it as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import yaml

from sgpo_data import __version__
from sgpo_data.card import loadable_views
from sgpo_data.config import Recipe
from sgpo_data.errors import SgpoError
from sgpo_data.export.filters import apply_filters
from sgpo_data.export.splits import choose_test_prompts, split_on
from sgpo_data.export.views import get_view, messages_array
from sgpo_data.graders.workers import available_cpus
from sgpo_data.pipeline.folder import hash_json, write_json
from sgpo_data.prompts import conversation, recorded_recipe
from sgpo_data.run_reader import StageFiles, generate_config, read_manifests
from sgpo_data.schema import error_rows, no_reference_rows, unscored_rows
from sgpo_data.stats import add_nested

PLOT_COLUMNS = ["is_correct", "reward", "judge_status", "first_error_step"]


def publish(recipe: Recipe, run: str | Path) -> dict:
    """Write the views, card and recipe of a complete export stage, unless they are already made from its
    current record and config; returns their counts (also kept in the stage's manifest statistics)."""
    return Publisher(recipe, Path(run)).publish()


class Publisher:
    """The views are written part by part (each part holds whole groups), so memory is one part's whatever the
    run's size. The test prompts are chosen first, from the prompt ids alone."""

    def __init__(self, recipe: Recipe, run: Path):
        self.recipe, self.run = recipe, run
        self.stage = StageFiles(run, "export")

    def publish(self) -> dict:
        """Under a lock of its own: `--shard` processes that complete the export stage together publish once (the
        others wait, then find it done)."""
        import fcntl

        with open(self.stage.dir / ".publish.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._publish()

    def _publish(self) -> dict:
        cfg = self.recipe.export
        folder, marker = self.stage.dir, self.stage.dir / "published.json"
        # what the views are made of: the record, the export's config and the code that built them
        source = hash_json([self.stage.output_fingerprint(), cfg.model_dump(), __version__])
        done = json.loads(marker.read_text()) if marker.is_file() else {}
        if done.get("source") == source:
            return done["counts"]
        marker.unlink(missing_ok=True)
        paths = self.stage.parts()
        test_ids = self._test_prompts(paths)
        writers = _Writers(folder, cfg.formats, source)
        try:
            counts, plotted = self._write_parts(paths, writers, test_ids)
            writers.close()
            (folder / "recipe.yaml").write_text(yaml.safe_dump(self._recipe_of_run(), sort_keys=False))
            counts["views_identity"] = source  # the card's identity for `datasets`, kept for the card at push
            if cfg.card:
                self._write_card(folder, pa.concat_tables(plotted), loadable_views(counts["views"]), counts)
        except BaseException:
            writers.discard()  # half-written Parquet files raise or crash when closed, which would hide this failure
            raise
        manifest = self.stage.manifest()
        manifest["statistics"] = {**manifest["statistics"], "export": counts}
        write_json(self.stage.manifest_path, manifest)
        write_json(marker, {"source": source, "counts": counts})
        return counts

    def views(self) -> dict:
        cfg = self.recipe.export
        return {view.name: get_view(view.name, view.options) for view in cfg.views}

    def _write_parts(self, paths: list[Path], writers: _Writers, test_ids: pa.Array | None
                     ) -> tuple[dict, list[pa.Table]]:
        """Every part of the record through the filters into the views; returns the counts and each part's
        PLOT_COLUMNS and `n_steps`."""
        cfg = self.recipe.export
        splits = ["train"] if test_ids is None else ["train", "test"]
        views = {(name, split): view for split in splits for name, view in self.views().items()}  # stateful views
        counts = {"filters": {}, "rows_after_filters": 0, "splits": dict.fromkeys(splits, 0),
                  "views": {name: dict.fromkeys(splits, 0) for name in self.views()}, "rows_in_error_left_out": 0,
                  "rows_without_reference_left_out": 0}
        plotted = []
        for path in paths:
            table = pq.read_table(path)
            failed = unscored_rows(table)  # rows in error, and rows without a reference (no outcome)
            scored = table.filter(pa.array(~failed))
            plotted.append(scored.select(PLOT_COLUMNS).append_column(
                "n_steps", pc.fill_null(pc.list_value_length(scored["steps"]), 0)))
            kept, filtered = self._filter(scored, dedupe_within_group=cfg.dedupe_within_group)
            counts = add_nested([counts, {"filters": filtered, "rows_after_filters": kept.num_rows,
                                          "rows_in_error_left_out": int(error_rows(table).sum()),
                                          "rows_without_reference_left_out": int(no_reference_rows(table).sum())}])
            for split, rows in split_on(kept, test_ids).items():
                prompts = messages_array(row_prompts(self.run, rows), rows.num_rows)  # shared by the views
                counts["splits"][split] += rows.num_rows
                for name in counts["views"]:
                    built = views[name, split].build(rows, prompts)
                    counts["views"][name][split] += built.num_rows
                    writers.write(name, split, built)
            writers.flush()  # this part's files are written before the next part is read
        _refuse_filters_that_keep_nothing(counts)
        counts["truncated_left_out_of_chat_views"] = sum(getattr(v, "left_out", 0) for v in views.values())
        return counts, plotted

    def _test_prompts(self, paths: list[Path]) -> pa.Array | None:
        """The prompts of the test split, chosen among the prompts left after the filters (as the views see them),
        from the few columns the filters read. Dedupe keeps one row of every group, so it is left out here."""
        cfg = self.recipe.export
        if not cfg.test_size:
            return None
        columns = ["prompt_id", "group_all_negative", "advantage", "response_tokens", "generate_status",
                   "judge_status", "grade_status"]
        table = ds.dataset([str(p) for p in paths], format="parquet").to_table(columns=columns)
        kept, _ = self._filter(table.filter(pa.array(~unscored_rows(table))), dedupe_within_group=False)
        return choose_test_prompts(kept["prompt_id"], cfg.test_size, cfg.split_seed)

    def _filter(self, table: pa.Table, dedupe_within_group: bool) -> tuple[pa.Table, dict[str, int]]:
        """The recipe's export filters (`apply_filters`), dedupe as asked."""
        cfg = self.recipe.export
        return apply_filters(
            table, drop_zero_advantage_groups=cfg.drop_zero_advantage_groups, only_all_negative=cfg.only_all_negative,
            min_response_tokens=cfg.min_response_tokens, max_response_tokens=cfg.max_response_tokens,
            dedupe_within_group=dedupe_within_group)

    def _recipe_of_run(self) -> dict:
        """The configuration every stage actually ran with, as one recipe."""
        tree = {}
        for manifest in read_manifests(self.run, ["generate", "judge", "score"]).values():
            tree.update(manifest["config"])
        tree["export"] = self.recipe.export.model_dump()
        return tree

    def _write_card(self, folder: Path, plotted: pa.Table, views: dict[str, list[str]], counts: dict) -> None:
        """The card and its plots; `plotted` is the scored rows' PLOT_COLUMNS and `n_steps`. No card when no view
        has a row: it would offer configs that `datasets` cannot load (a run whose every row is in error says so,
        and asks for a rerun, itself)."""
        from sgpo_data.card import render_card
        from sgpo_data.report import make_plots

        if not views:
            (folder / "README.md").unlink(missing_ok=True)
            return
        stats = StageFiles(self.run, "score").manifest()["statistics"]
        plots = make_plots(plotted, stats, folder / "plots")
        relative = {stem: f"plots/{path.name}" for stem, path in plots.items()}
        (folder / "README.md").write_text(render_card(self.run, views, relative, license=self.recipe.export.license,
                                                      export_counts=counts, language=self.recipe.export.language,
                                                      identity=counts["views_identity"]))


def _refuse_filters_that_keep_nothing(counts: dict) -> None:
    """Filters that leave no scored row make views nothing can load; said before any file is put in place."""
    removed = {name: n for name, n in counts["filters"].items() if n}
    if counts["rows_after_filters"] or not removed:
        return
    named = ", ".join(f"export.{name} removed {n}" for name, n in removed.items())
    raise SgpoError(f"export: the filters kept none of the {sum(removed.values())} scored rows ({named}); loosen "
                    "them in the recipe and rerun export with --overwrite")


def row_prompts(run: Path, table: pa.Table) -> list[list[dict]]:
    """The chat messages each row's policy saw, rebuilt from the generate stage's recorded config."""
    generate = recorded_recipe(generate_config(run)).generate
    return [conversation(generate, problem) for problem in table["problem"].to_pylist()]


class _Writers:
    """Every view and split written a part at a time: a Parquet file (format `parquet`) and an Arrow stream (format
    `hf`) that becomes the data of the view's DatasetDict (`_save_hf`), so no view is held whole or read back. A
    part's files are written on threads, one per CPU (pyarrow encodes without the GIL); a file's writes run one
    after the other, in the order asked (a writer is not safe across threads)."""

    def __init__(self, folder: Path, formats: list[str], fingerprint: str):
        self.folder, self.formats, self.fingerprint = folder, formats, fingerprint
        self.staging = folder / ".views.tmp"
        shutil.rmtree(self.staging, ignore_errors=True)
        self.writers: dict[tuple[str, str], list] = {}
        self.first: dict[tuple[str, str], pa.Table] = {}  # each view and split's first row (or its empty schema)
        self.opened: list = []  # every file writer, the run's record too: closed together, or discarded together
        self.pool = ThreadPoolExecutor(available_cpus(), thread_name_prefix="export-writer")
        self.pending: list[Future] = []
        self.last: dict[int, Future] = {}  # each file writer's latest write

    def submit(self, writer, table: pa.Table) -> None:
        """`writer.write_table(table)` on a thread once the file's write before it is done; none after a failed
        one (`flush` raises the first failure). The pool runs its queue in order, so that write has begun."""
        before = self.last.get(id(writer))

        def write() -> None:
            if before is None or before.exception() is None:
                writer.write_table(table)

        self.last[id(writer)] = future = self.pool.submit(write)
        self.pending.append(future)

    def flush(self) -> None:
        """Wait for the part's writes; a failed one raises here."""
        pending, self.pending, self.last = self.pending, [], {}
        for future in pending:
            future.result()

    def parquet(self, path: Path, schema: pa.Schema) -> pq.ParquetWriter:
        writer = pq.ParquetWriter(path, schema)
        self.opened.append(writer)
        return writer

    def _open(self, view: str, split: str, schema: pa.Schema) -> list:
        (self.staging / view).mkdir(parents=True, exist_ok=True)
        writers = []
        if "parquet" in self.formats:
            writers.append(self.parquet(self.staging / view / f"{split}-00000-of-00001.parquet", schema))
        if "hf" in self.formats:
            writers.append(pa.ipc.new_stream(str(self._stream(view, split)), schema))
            self.opened.append(writers[-1])
        return writers

    def _stream(self, view: str, split: str) -> Path:
        return self.staging / view / f"{split}.arrow"

    def write(self, view: str, split: str, table: pa.Table) -> None:
        key = (view, split)
        if key not in self.writers:
            self.writers[key], self.first[key] = self._open(view, split, table.schema), table.slice(0, 0)
        schema = self.first[key].schema
        if not table.num_rows:  # no empty row groups: datasets sizes its batches by the first one
            return
        table = table if table.schema == schema else table.cast(schema)
        if not self.first[key].num_rows:
            self.first[key] = table.slice(0, 1)
        for writer in self.writers[key]:
            self.submit(writer, table)

    def close(self) -> None:
        """Close the files and move every view into place."""
        self.flush()
        self.pool.shutdown()
        for writer in self.opened:
            writer.close()
        self.opened = []
        views = sorted({view for view, _ in self.writers})
        for view in views:
            if "hf" in self.formats:
                splits = {split: (self._stream(view, split), self.first[view, split]) for v, split in self.writers
                          if v == view}
                _save_hf(splits, self.folder / "hf" / view, hash_json([self.fingerprint, view]))
            shutil.rmtree(self.folder / view, ignore_errors=True)
            if "parquet" in self.formats:
                for stream in (self.staging / view).glob("*.arrow"):
                    stream.unlink()
                os.replace(self.staging / view, self.folder / view)
        shutil.rmtree(self.staging, ignore_errors=True)

    def discard(self) -> None:
        """After a failure: wait for the writes under way (closing a file while a thread writes it crashes; a
        failed write only follows from the failure), then drop every file unfinished. A Parquet writer is never
        closed here: closing one that a failed write left mid-row-group raises, which would hide the failure."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pending, self.last = [], {}
        for writer in self.opened:
            if isinstance(writer, pq.ParquetWriter):
                _abandon(writer)
        self.opened = []  # an Arrow stream's file closes when its writer is collected, with no end marker
        shutil.rmtree(self.staging, ignore_errors=True)
        for staging in (self.folder / "hf").glob("*.tmp"):  # `_save_hf`'s
            shutil.rmtree(staging, ignore_errors=True)


def _abandon(writer: pq.ParquetWriter) -> None:
    """Close a Parquet writer's file without its footer: marked closed, pyarrow never finalises it (Arrow's own
    finalising on collection fails on the closed file, and Arrow ignores that failure)."""
    writer.is_open = False
    if writer.file_handle is not None and not writer.file_handle.closed:
        writer.file_handle.close()


def _save_hf(splits: dict[str, tuple[Path, pa.Table]], target: Path, fingerprint: str) -> None:
    """A DatasetDict saved to disk without reading the view back: datasets saves each split's first row as one
    shard (its data file, state and features), then the data file is replaced by the split's whole Arrow stream,
    which has the same schema (datasets' state records no row count; the export tests load every split back)."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    DatasetDict({split: Dataset(first, fingerprint=hash_json([fingerprint, split]))
                 for split, (_, first) in sorted(splits.items())}).save_to_disk(
        str(staging), num_shards=dict.fromkeys(splits, 1))  # one shard, also for a split with no rows
    for split, (stream, _) in splits.items():
        data = staging / split / "data-00000-of-00001.arrow"
        if not data.is_file():
            raise SgpoError(f"export: datasets did not save {data.name}; this version of datasets saves "
                            "DatasetDicts another way: set export.formats: [parquet]")
        os.replace(stream, data)
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
