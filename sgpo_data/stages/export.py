"""export: the scored rows as the run's record, one part per score part; the publish step (`publish.py`) then
makes the views for TRL, verl, stepwise PRM training and `datasets`, the dataset card and its plots from it."""

from __future__ import annotations

from sgpo_data.export import get_view
from sgpo_data.pipeline.stage import Shard, ShardOutput, Stage, shard_per_part
from sgpo_data.run_reader import StageFiles
from sgpo_data.schema import CONTRACT_COLUMNS, SCORE_SCHEMA


class ExportStage(Stage):
    """The run's record, then the views (Parquet + DatasetDict), dataset card and plots in RUN/export/."""

    name = "export"
    upstream = "score"
    needs = tuple(SCORE_SCHEMA.names)
    adds = ()

    def config(self) -> dict:
        return {"export": self.recipe.export.model_dump()}

    def plan(self, upstream: StageFiles) -> tuple[list[Shard], str]:
        return shard_per_part(upstream), upstream.manifest()["identity"]

    def process(self, shard: Shard) -> ShardOutput:
        table = shard.load().select(CONTRACT_COLUMNS)
        for view in self.recipe.export.views:  # a view the run cannot make fails before anything is written
            get_view(view.name, view.options).check(table.slice(0, 0))
        self.advance(table.num_rows)
        return ShardOutput(table)

    def statistics(self, shard_stats: list[dict]) -> dict:
        """The score stage's statistics; the publish step adds the views' counts under `export`."""
        return dict(StageFiles(self.run, "score").manifest()["statistics"])


__all__ = ["ExportStage"]
