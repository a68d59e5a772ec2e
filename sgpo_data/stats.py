"""Run statistics from whatever columns a stage's output has; they flow into manifests and summaries."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.schema import JudgeStatus, SCORE_FIELDS


def _count(table: pa.Table, column: str, value: str) -> int:
    return int(pc.sum(pc.equal(table[column], value)).as_py() or 0)


def summarize(table: pa.Table) -> dict:
    if all(f.name in table.column_names for f in SCORE_FIELDS):
        from sgpo_data.scoring import score_stats

        return score_stats(table)
    stats: dict = {"prompts": pc.count_distinct(table["prompt_id"]).as_py(), "responses": table.num_rows}
    if "is_correct" in table.column_names:
        graded = table.num_rows - table["is_correct"].null_count
        correct = int(pc.sum(table["is_correct"]).as_py() or 0)
        stats.update(graded=graded, accuracy=correct / graded if graded else None)
    if "grade_status" in table.column_names:
        values, counts = pc.value_counts(table["grade_status"]).flatten()
        stats["grade_status"] = dict(zip(values.to_pylist(), counts.to_pylist()))
    if "judge_status" in table.column_names:
        stats.update(
            judged=_count(table, "judge_status", JudgeStatus.OK),
            judge_parse_errors=_count(table, "judge_status", JudgeStatus.PARSE_ERROR),
            judge_errors=_count(table, "judge_status", JudgeStatus.ERROR),
        )
    return stats
