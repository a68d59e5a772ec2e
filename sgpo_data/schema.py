"""The row contract (docs/ARCHITECTURE.md): one row per rollout, keyed by (prompt_id, sample_idx).

Each stage declares the columns it needs and the columns it adds; stages only add columns, never drop rows.
"""

from __future__ import annotations

import pyarrow as pa

KEY = ("prompt_id", "sample_idx")

INPUT_FIELDS = [
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("problem", pa.string(), nullable=False),
    pa.field("reference_solution", pa.string()),
    pa.field("reference_answer", pa.string()),
    pa.field("data_source", pa.string()),  # extension: where the prompt came from (file, preset, hub id)
]

GENERATE_FIELDS = [
    pa.field("sample_idx", pa.int32(), nullable=False),
    pa.field("response", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("policy_model", pa.string()),
    pa.field("prompt_tokens", pa.int32()),  # extension: the prompt's length in tokens (usage; paid once for G samples)
    pa.field("response_tokens", pa.int32()),
    pa.field("response_logprobs", pa.list_(pa.float32())),
    pa.field("response_token_ids", pa.list_(pa.int32())),  # extension: the exact tokens the logprobs belong to
    pa.field("pred_answer", pa.string()),
    pa.field("is_correct", pa.bool_()),
    pa.field("grade_status", pa.string()),  # extension: ok, no_answer, no_reference, timeout, error, no_response
    pa.field("generate_status", pa.string()),  # ok, or error: the request failed and `response` is null
    pa.field("generate_error_kind", pa.string()),  # status error: an ErrorKind (bad_request, server_error, ...)
    pa.field("generate_error", pa.string()),  # status error: the error text, with the raw body when there was one
]

JUDGE_FIELDS = [
    pa.field("steps", pa.list_(pa.string())),
    pa.field("first_error_step", pa.int32()),
    pa.field("judge_status", pa.string()),
    pa.field("judge_model", pa.string()),
    pa.field("judge_raw", pa.string()),
    pa.field("judge_prompt_tokens", pa.int32()),  # extension: usage of the row's judge requests (a group's, shared out)
    pa.field("judge_completion_tokens", pa.int32()),
    pa.field("judge_calls", pa.int32()),  # extension: engine requests behind the verdict (0: decided locally)
    pa.field("judge_seconds", pa.float32()),  # extension: the verdict's time: its requests in flight, or local work
    pa.field("judge_error_kind", pa.string()),  # judge_status error: an ErrorKind
    pa.field("judge_error", pa.string()),  # judge_status error: the error text
]

SCORE_FIELDS = [
    pa.field("rts", pa.float32()),
    pa.field("reward", pa.float32()),
    pa.field("reward_outcome", pa.float32()),
    pa.field("advantage", pa.float32()),
    pa.field("advantage_grpo", pa.float32()),
    pa.field("group_all_negative", pa.bool_()),
]

PROMPT_SCHEMA = pa.schema(INPUT_FIELDS)
GENERATE_SCHEMA = pa.schema(INPUT_FIELDS + GENERATE_FIELDS)
JUDGE_SCHEMA = pa.schema(INPUT_FIELDS + GENERATE_FIELDS + JUDGE_FIELDS)
SCORE_SCHEMA = pa.schema(INPUT_FIELDS + GENERATE_FIELDS + JUDGE_FIELDS + SCORE_FIELDS)

CONTRACT_COLUMNS = [f.name for f in SCORE_SCHEMA]


class GradeStatus:
    OK = "ok"
    NO_ANSWER = "no_answer"  # nothing answer-like in the response
    NO_REFERENCE = "no_reference"  # the prompt has no reference_answer to compare against
    TIMEOUT = "timeout"
    ERROR = "error"
    NO_RESPONSE = "no_response"  # the generate request failed: nothing to grade


class GenerateStatus:
    OK = "ok"
    ERROR = "error"


class JudgeStatus:
    OK = "ok"
    SKIPPED_CORRECT = "skipped_correct"
    SKIPPED_NO_RESPONSE = "skipped_no_response"  # the generate request failed: nothing to judge
    SKIPPED_SCOPE = "skipped_scope"  # a wrong response outside judge.scope (all_negative_groups: its group has a right one)
    PARSE_ERROR = "parse_error"
    ERROR = "error"


def error_rows(table: pa.Table):
    """Rows a failed request left without a result (generate or judge status `error`), as a numpy mask."""
    import numpy as np
    import pyarrow.compute as pc

    mask = np.zeros(table.num_rows, dtype=bool)
    for column in ("generate_status", "judge_status"):
        if column in table.column_names:
            mask |= pc.fill_null(pc.equal(table[column], "error"), False).to_numpy(zero_copy_only=False)
    return mask


def no_reference_rows(table: pa.Table):
    """Rows whose prompt has no reference answer (`grade_status` no_reference): no outcome, so no reward."""
    import numpy as np
    import pyarrow.compute as pc

    if "grade_status" not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    return pc.fill_null(pc.equal(table["grade_status"], GradeStatus.NO_REFERENCE), False).to_numpy(zero_copy_only=False)


def unscored_rows(table: pa.Table):
    """Rows that take no part in rewards, advantages, group counts and the views: rows in error, and rows without
    a reference answer (which the score stage admits only when `score.no_reference` is `exclude`)."""
    return error_rows(table) | no_reference_rows(table)


def group_codes(table: pa.Table, where: str):
    """Each row's group (its prompt): 0..n_groups-1, numbered by the prompt_id's first appearance."""
    import pyarrow.compute as pc

    from sgpo_data.errors import SgpoError

    pid = table["prompt_id"].combine_chunks()
    if pid.null_count:
        raise SgpoError(f"{where}: {pid.null_count} row(s) have a null prompt_id; every row needs its group's id")
    return pc.dictionary_encode(pid).indices.to_numpy(zero_copy_only=False)


def require_columns(table: pa.Table, needed: list[str], where: str, fix: str) -> None:
    """Fail with one line naming the missing columns, the file or stage, and what to run."""
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        from sgpo_data.errors import SgpoError

        raise SgpoError(f"{where}: missing column(s) {', '.join(missing)}; {fix}")
