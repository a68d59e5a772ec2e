"""Run statistics, accumulated while a stage writes: each shard's output gives a *tally* (counters that add up
across shards), and the manifest's statistics are computed from the sum of the tallies, so no stage reads its
output back. Groups never span shards (a generate shard holds whole prompts), so group counts add up too.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.errors import SgpoError
from sgpo_data.schema import JudgeStatus


def add_nested(tallies) -> dict:
    """Tallies summed key by key: numbers add, lists of numbers add element-wise, dicts recurse."""
    total: dict = {}
    for tally in tallies:
        for key, value in tally.items():
            if key not in total:
                total[key] = add_nested([value]) if isinstance(value, dict) else value
            elif isinstance(value, dict):
                total[key] = add_nested([total[key], value])
            elif isinstance(value, list):
                total[key] = [a + b for a, b in zip(total[key], value)]
            else:
                total[key] = total[key] + value
    return total


def summed_tallies(shard_stats: list[dict]) -> dict:
    """The shards' tallies (kept in their markers) added up."""
    if any("tally" not in stats for stats in shard_stats):
        raise SgpoError("a shard of this stage was written by an older sgpo-data (its marker has no tally); redo the "
                        "stage with --overwrite")
    return add_nested(stats["tally"] for stats in shard_stats)


def _count(table: pa.Table, column: str, value: str) -> int:
    return int(pc.sum(pc.equal(table[column], value)).as_py() or 0)


def tally(table: pa.Table) -> dict:
    """Counters of one shard's rows, from whatever columns the stage's output has."""
    counts: dict = {"prompts": pc.count_distinct(table["prompt_id"]).as_py(), "responses": table.num_rows}
    if "is_correct" in table.column_names:
        counts.update(graded=table.num_rows - table["is_correct"].null_count,
                      correct=int(pc.sum(table["is_correct"]).as_py() or 0))
    if "grade_status" in table.column_names:
        values, numbers = pc.value_counts(table["grade_status"]).flatten()
        counts["grade_status"] = dict(zip(values.to_pylist(), numbers.to_pylist()))
    if "judge_status" in table.column_names:
        counts.update(
            judged=_count(table, "judge_status", JudgeStatus.OK),
            judge_parse_errors=_count(table, "judge_status", JudgeStatus.PARSE_ERROR),
            judge_errors=_count(table, "judge_status", JudgeStatus.ERROR),
        )
    return counts


def summarize(counts: dict) -> dict:
    """The manifest's statistics from the summed tallies: the counters, and the accuracy over graded rows."""
    stats = dict(counts)
    if "graded" in stats:
        correct = stats.pop("correct")
        stats["accuracy"] = correct / stats["graded"] if stats["graded"] else None
    return stats
