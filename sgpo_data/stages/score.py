"""score: SGPO rewards from the first-error position, and GRPO/SGPO group advantages, one judge part at a time.

Rows in error (a failed generate or judge request) take no part: their rts, rewards and advantages are null,
and their group's statistics and advantages are computed over the group's remaining rows (a group left with
one row gets advantage 0). They are counted in the manifest (`rows_in_error`, `groups_with_rows_in_error`).
Rows whose prompt has no reference answer have no outcome: the stage refuses them unless `score.no_reference` is
`exclude`, and then they take no part either (`rows_without_reference`).
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sgpo_data.errors import SgpoError, first_line
from sgpo_data.pipeline.folder import hash_json
from sgpo_data.pipeline.stage import Shard, ShardOutput, Stage, shard_per_part
from sgpo_data.run_reader import StageFiles
from sgpo_data.schema import JUDGE_SCHEMA, SCORE_FIELDS, SCORE_SCHEMA, error_rows, no_reference_rows, unscored_rows
from sgpo_data.scoring import score_summary, score_table, score_tally
from sgpo_data.scoring.score import NEEDED
from sgpo_data.stats import summed_tallies


def load_tokenizer(recipe):
    """The policy's tokenizer, for token-weighted RTS; a name that does not load is one line naming the key."""
    return _tokenizer(recipe.score.tokenizer or recipe.generate.model)


@functools.lru_cache(maxsize=4)  # the recipe check and the stage load the same one
def _tokenizer(name: str | None):
    from transformers import AutoTokenizer

    from sgpo_data.backends.models import resolve_model

    try:
        path, _ = resolve_model(name)
        return AutoTokenizer.from_pretrained(path)
    except SgpoError as exc:
        raise SgpoError(f"score.rts=tokens (score.tokenizer, else generate.model): {exc}") from None
    except Exception as exc:  # OSError for an unknown name, Hub errors offline, ValueError for a folder without one
        raise SgpoError(f"score.rts=tokens: the tokenizer {name!r} (score.tokenizer, else generate.model) could not "
                        f"be loaded ({first_line(exc)[:200]}); set score.tokenizer to the policy's tokenizer folder "
                        "or Hub id") from None


def _tally(table: pa.Table) -> dict:
    """The score stage's counters of one shard's rows (rewards, RTS and groups besides the rows')."""
    read = ["prompt_id", "is_correct", "steps", "first_error_step", "judge_status", "generate_status",
            "grade_status", "data_source", *[f.name for f in SCORE_FIELDS]]
    scored, unscored, _ = _split_unscored(table.select([c for c in read if c in table.column_names]))
    counts = score_tally(scored)
    failed = unscored.filter(pa.array(error_rows(unscored)))
    counts.update(rows_in_error=failed.num_rows, rows_without_reference=unscored.num_rows - failed.num_rows,
                  groups_with_rows_in_error=pc.count_distinct(failed["prompt_id"]).as_py(),
                  judge_errors=int(pc.sum(pc.equal(table["judge_status"], "error")).as_py() or 0))
    return counts


def _split_unscored(table: pa.Table) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """(rows that are scored, rows that are not, the mask of the latter); no copy when every row is scored."""
    unscored = unscored_rows(table)
    if not unscored.any():
        return table, table.slice(0, 0), unscored
    return table.filter(pa.array(~unscored)), table.filter(pa.array(unscored)), unscored


def refuse_no_reference(table: pa.Table, where: str) -> None:
    """SGPO rewards need an outcome: rows without a reference answer are refused unless the recipe excludes them."""
    missing = np.flatnonzero(no_reference_rows(table))
    if missing.size:
        first = table["prompt_id"][int(missing[0])].as_py()
        raise SgpoError(f"{where}: {missing.size} row(s) have no reference answer (grade_status no_reference, e.g. "
                        f"prompt_id={first!r}), so they have no outcome to reward; map the answer column "
                        "(data.columns.reference_answer) or set score.no_reference=exclude to leave them out")


class ScoreStage(Stage):
    """SGPO rewards and GRPO/SGPO advantages.

    One shard per judge part (each holds whole groups), so memory is one part's whatever the run's size."""

    name = "score"
    upstream = "judge"
    needs = tuple(JUDGE_SCHEMA.names)
    adds = tuple(SCORE_FIELDS)

    def __init__(self, recipe):
        super().__init__(recipe)
        self.batch_std: tuple[float, float] | None = None
        self._tokenizer = None

    def check(self) -> None:
        """A tokenizer for rts=tokens loads now, before generate and judge are paid for (loads are cached)."""
        if self.recipe.score.rts == "tokens":
            load_tokenizer(self.recipe)

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
        read = [*NEEDED, "generate_status", "grade_status"]  # what score_table and the unscored mask read
        for shard in shards:
            scored, _, _ = _split_unscored(pq.read_table(shard.paths[0], columns=read))
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
        if self.recipe.score.no_reference == "refuse":
            refuse_no_reference(table, shard.where)
        scored, unscored, failed = _split_unscored(table)
        scored = score_table(scored, self.recipe.score, self.tokenizer(), self.batch_std)
        for field in SCORE_FIELDS:
            unscored = unscored.append_column(field, pa.nulls(unscored.num_rows, field.type))
        out = scored.select(SCORE_SCHEMA.names).cast(SCORE_SCHEMA)
        if unscored.num_rows:
            merged = pa.concat_tables([out, unscored.select(SCORE_SCHEMA.names).cast(SCORE_SCHEMA)])
            order = np.concatenate([np.flatnonzero(~failed), np.flatnonzero(failed)])
            out = merged.take(pa.array(np.argsort(order)))  # back to the input's row order
        self.advance(table.num_rows)
        return ShardOutput(out, {"tally": _tally(out)})

    def statistics(self, shard_stats: list[dict]) -> dict:
        counts = summed_tallies(shard_stats)
        stats = score_summary(counts)
        stats.update({key: counts.get(key, 0) for key in ("rows_in_error", "rows_without_reference",
                                                          "groups_with_rows_in_error", "judge_errors")})
        for stage in ("generate", "judge") if self.run else ():  # what the dataset cost, from the engine stages
            upstream = (StageFiles(self.run, stage).manifest() or {}).get("statistics", {})
            stats.update({f"{stage}_{key}": value for key, value in upstream.get("usage", {}).items()})
            if "errors_found_by" in upstream:
                stats["judge_errors_found_by"] = upstream["errors_found_by"]
        return stats
