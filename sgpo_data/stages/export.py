"""export: the scored rows as Parquet (`RUN/export/part-00000.parquet`, every contract column) and as a
Hugging Face `DatasetDict` saved to disk (`RUN/export/hf`, split `train`)."""

from __future__ import annotations

import os
import shutil

from sgpo_data.config import Recipe
from sgpo_data.schema import CONTRACT_COLUMNS
from sgpo_data.stages.progress import Progress
from sgpo_data.stages.run_folder import StageOutput


def run_export(recipe: Recipe, out, overwrite: bool = False, progress: Progress | None = None) -> StageOutput:
    upstream = StageOutput(out, "score")
    upstream.require_complete()
    stage = StageOutput(out, "export")
    stage.start({"export": recipe.export.model_dump()}, upstream.output_fingerprint(), 1, overwrite)
    if not stage.is_done(0):
        table = upstream.read().select(CONTRACT_COLUMNS)
        if "hf" in recipe.export.formats:
            _save_hf(table, stage.dir / "hf")
        stage.write_shard(0, table)  # the marker comes last, after the DatasetDict is in place
    stage.finish(upstream.manifest()["statistics"])
    return stage


def _save_hf(table, target) -> None:
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()

    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    DatasetDict({"train": Dataset(table)}).save_to_disk(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
