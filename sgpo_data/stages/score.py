"""score: SGPO rewards from the first-error position, and GRPO/SGPO group advantages, one judge part at a time.

Rows in error (a failed generate or judge request) take no part: their rts, rewards and advantages are null,
and their group's statistics and advantages are computed over the group's remaining rows (a group left with
one row gets advantage 0). They are counted in the manifest (`rows_in_error`, `groups_with_rows_in_error`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sgpo_data.pipeline.folder import hash_json
from sgpo_data.pipeline.stage import STAGES, Shard, ShardOutput, Stage, shard_per_part
from sgpo_data.run_reader import StageFiles
from sgpo_data.schema import JUDGE_SCHEMA, SCORE_FIELDS, SCORE_SCHEMA, error_rows
from sgpo_data.scoring import score_summary, score_table, score_tally
from sgpo_data.scoring.score import NEEDED
from sgpo_data.stats import summed_tallies


def load_tokenizer(recipe):
    """The policy's tokenizer, for token-weighted RTS."""
    from transformers import AutoTokenizer

    from sgpo_data.backends.models import resolve_model

    path, _ = resolve_model(recipe.score.tokenizer or recipe.generate.model)
    return AutoTokenizer.from_pretrained(path)


def whole_upstream(upstream: StageFiles) -> tuple[list[Shard], str]:
    """One shard holding every upstream part (export writes one dataset from the whole run)."""
    manifest = upstream.manifest()
    return [Shard(0, manifest["output_fingerprint"], manifest["rows"], paths=upstream.parts())], manifest["identity"]


def _split_failed(table: pa.Table) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """(rows that are scored, rows in error, the error mask); no copy when no row is in error."""
    failed = error_rows(table)
    if not failed.any():
        return table, table.slice(0, 0), failed
    return table.filter(pa.array(~failed)), table.filter(pa.array(failed)), failed


@STAGES.register("score")
class ScoreStage(Stage):
    """One shard per judge part (each holds whole groups), so memory is one part's whatever the run's size."""

    name = "score"
    upstream = "judge"
    needs = tuple(JUDGE_SCHEMA.names)
    adds = tuple(SCORE_FIELDS)

    def __init__(self, recipe):
        super().__init__(recipe)
        self.batch_std: tuple[float, float] | None = None
        self._tokenizer = None

    def config(self) -> dict:
        return {"score": self.recipe.score.model_dump()}

    def plan(self, upstream: StageFiles) -> tuple[list[Shard], str]:
        shards = shard_per_part(upstream)
        if self.recipe.score.advantage == "batch":
            # Every shard's advantages depend on the whole batch: its std, and every part's fingerprint.
            self.batch_std = self._batch_std(shards)
            for shard in shards:
                shard.fingerprint = hash_json([shard.fingerprint, upstream.output_fingerprint()])
        return shards, upstream.manifest()["identity"]

    def _batch_std(self, shards: list[Shard]) -> tuple[float, float]:
        """The unbiased std of `reward` and of `reward_outcome` over every scored row of the run, part by part."""
        rewards, outcomes = [], []
        read = [*NEEDED, "generate_status"]  # what score_table and the error mask read
        for shard in shards:
            scored, _, _ = _split_failed(pq.read_table(shard.paths[0], columns=read))
            table = score_table(scored, self.recipe.score, self.tokenizer())
            rewards.append(table["reward"].to_numpy(zero_copy_only=False))
            outcomes.append(table["reward_outcome"].to_numpy(zero_copy_only=False))
        reward, outcome = np.concatenate(rewards), np.concatenate(outcomes)
        return tuple(float(x.std(ddof=1)) if x.size > 1 else 0.0 for x in (reward, outcome))

    def tokenizer(self):
        if self.recipe.score.rts == "tokens" and self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.recipe)
        return self._tokenizer

    def process(self, shard: Shard) -> ShardOutput:
        table = shard.load()
        self.check_input(table, shard.where)
        scored, unscored, failed = _split_failed(table)
        scored = score_table(scored, self.recipe.score, self.tokenizer(), self.batch_std)
        for field in SCORE_FIELDS:
            unscored = unscored.append_column(field, pa.nulls(unscored.num_rows, field.type))
        out = scored.select(SCORE_SCHEMA.names).cast(SCORE_SCHEMA)
        if unscored.num_rows:
            merged = pa.concat_tables([out, unscored.select(SCORE_SCHEMA.names).cast(SCORE_SCHEMA)])
            order = np.concatenate([np.flatnonzero(~failed), np.flatnonzero(failed)])
            out = merged.take(pa.array(np.argsort(order)))  # back to the input's row order
        self.advance(table.num_rows)
        return ShardOutput(out)

    def tally(self, table: pa.Table) -> dict:
        read = ["prompt_id", "is_correct", "steps", "first_error_step", "judge_status", "generate_status",
                "data_source", *[f.name for f in SCORE_FIELDS]]
        scored, unscored, _ = _split_failed(table.select([c for c in read if c in table.column_names]))
        counts = score_tally(scored)
        counts.update(rows_in_error=unscored.num_rows,
                      groups_with_rows_in_error=pc.count_distinct(unscored["prompt_id"]).as_py(),
                      judge_errors=int(pc.sum(pc.equal(table["judge_status"], "error")).as_py() or 0))
        return counts

    def statistics(self, shard_stats: list[dict]) -> dict:
        counts = summed_tallies(shard_stats)
        stats = score_summary(counts)
        stats.update({key: counts[key] for key in ("rows_in_error", "groups_with_rows_in_error", "judge_errors")})
        for stage in ("generate", "judge") if self.run else ():  # what the dataset cost, from the engine stages
            upstream = (StageFiles(self.run, stage).manifest() or {}).get("statistics", {})
            stats.update({f"{stage}_{key}": value for key, value in upstream.get("usage", {}).items()})
            if "errors_found_by" in upstream:
                stats["judge_errors_found_by"] = upstream["errors_found_by"]
        return stats
