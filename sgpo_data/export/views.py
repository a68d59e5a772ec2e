"""Export views: the scored run table reshaped for the tools people train with.

A view names the columns it needs and builds one Arrow table from the scored rows and `prompts`: one
list of chat messages (`{"role", "content"}`) per row, exactly as the policy saw them. Views are chosen
by name, options passed to the constructor: `get_view("trl", conversational=True).build(table, prompts)`.
Column operations only (pyarrow + numpy); the only Python loops walk the caller's message lists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.errors import SgpoError
from sgpo_data.registry import Registry
from sgpo_data.schema import (CONTRACT_COLUMNS, GENERATE_FIELDS, INPUT_FIELDS, JUDGE_FIELDS, SCORE_FIELDS,
                              SCORE_SCHEMA, JudgeStatus, group_codes)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

_STAGE_FIELDS = {"input": INPUT_FIELDS, "generate": GENERATE_FIELDS, "judge": JUDGE_FIELDS, "score": SCORE_FIELDS}
_STAGE_OF = {f.name: stage for stage, fields in _STAGE_FIELDS.items() for f in fields}
_FIX = {"input": "add them to the prompts and re-run from `sgpo-data generate`"}


def _col(table: pa.Table, name: str) -> pa.Array:
    """One column as a single array with its contract type (so e.g. polars' large_string comes back clean)."""
    array = table[name].combine_chunks()
    return array.cast(SCORE_SCHEMA.field(name).type) if name in SCORE_SCHEMA.names else array


def messages_array(prompts: list, n_rows: int) -> pa.ListArray:
    """The caller's per-row chat messages as list<struct<role, content>>, checked row by row."""
    if len(prompts) != n_rows:
        raise SgpoError(f"export: got {len(prompts)} prompt(s) for {n_rows} row(s); pass one message list per row")
    rows = []
    for i, messages in enumerate(prompts):
        ok = isinstance(messages, (list, tuple)) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages)
        if not ok:
            raise SgpoError(f"export: prompt of row {i} is not a list of {{'role': str, 'content': str}} messages; "
                            "pass the chat messages the policy saw")
        rows.append([{"role": m["role"], "content": m["content"]} for m in messages])
    return pa.array(rows, type=MESSAGES)


def user_texts(prompts: list) -> pa.Array:
    """The chat-template-free prompt of each row: the content of its last user message."""
    texts = []
    for i, messages in enumerate(prompts):
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise SgpoError(f"export: prompt of row {i} has no user message; plain-text views take the prompt "
                            "from the last user message")
        texts.append(users[-1])
    return pa.array(texts, pa.string())


class View:
    """One export format: `needs` columns of the scored table, `build(table, prompts)` returns the view."""

    name: str = ""
    needs: tuple[str, ...] = ()

    def build(self, table: pa.Table, prompts: list) -> pa.Table:
        self.check(table)
        return self._build(table, prompts)

    def check(self, table: pa.Table) -> None:
        """Fail before any work when the run lacks a stage this view needs, saying which stage to run."""
        missing = [c for c in self.needs if c not in table.column_names]
        if not missing:
            return
        by_stage = {s: [c for c in missing if _STAGE_OF.get(c, "input") == s] for s in _STAGE_FIELDS}
        parts = [f"the {'input' if s == 'input' else s + ' stage'}'s columns ({', '.join(cols)})"
                 for s, cols in by_stage.items() if cols]
        first = next(s for s, cols in by_stage.items() if cols)
        fix = _FIX.get(first, f"run `sgpo-data {first}` first")
        raise SgpoError(f"view {self.name!r} needs {' and '.join(parts)}; {fix}")

    def _build(self, table: pa.Table, prompts: list) -> pa.Table:
        raise NotImplementedError


VIEWS: Registry[View] = Registry("export view")


def get_view(name: str, **options) -> View:
    return VIEWS.get(name, **options)


@VIEWS.register("flat")
class FlatView(View):
    """Every contract column, then any extra columns the run carries; one row per rollout. Ignores prompts."""

    name = "flat"
    needs = tuple(CONTRACT_COLUMNS)

    def _build(self, table, prompts):
        extra = [c for c in table.column_names if c not in SCORE_SCHEMA.names]
        return pa.table({c: _col(table, c) for c in CONTRACT_COLUMNS + extra})


GROUP_SCALARS = ["prompt_id", "problem", "reference_solution", "reference_answer", "data_source"]
GROUP_LISTS = {"sample_idxs": "sample_idx", "responses": "response", "is_correct": "is_correct",
               "rewards": "reward", "rewards_outcome": "reward_outcome", "advantages": "advantage",
               "advantages_grpo": "advantage_grpo", "first_error_steps": "first_error_step"}


@VIEWS.register("grouped")
class GroupedView(View):
    """One row per prompt (order of first appearance); per-sample lists ordered by sample_idx."""

    name = "grouped"
    needs = (*GROUP_SCALARS, *GROUP_LISTS.values(), "group_all_negative")

    def _build(self, table, prompts):
        messages = messages_array(prompts, table.num_rows)
        codes = group_codes(table, "export view 'grouped'")
        order = pc.sort_indices(pa.table({"g": codes, "s": _col(table, "sample_idx")}),
                                [("g", "ascending"), ("s", "ascending")])
        rows = table.take(order)
        offsets = np.concatenate([[0], np.cumsum(np.bincount(codes))]).astype(np.int32)
        heads = pa.array(offsets[:-1])
        out = {c: _col(rows, c).take(heads) for c in GROUP_SCALARS}
        out["prompt"] = messages.take(order).take(heads)
        for name, column in GROUP_LISTS.items():
            out[name] = pa.ListArray.from_arrays(pa.array(offsets), _col(rows, column))
        out["group_all_negative"] = _col(rows, "group_all_negative").take(heads)
        return pa.table(out)


TRL_SCORES = ["advantage", "advantage_grpo", "reward", "reward_outcome"]
BEHAVIOUR_COLUMNS = ["response_logprobs", "response_token_ids"]  # for offline importance ratios, when present


def _assistant_messages(response: pa.Array) -> pa.ListArray:
    """[{"role": "assistant", "content": response}] per row; null where the response is null."""
    n = len(response)
    message = pa.StructArray.from_arrays([pa.repeat("assistant", n), response], fields=list(MESSAGE))
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), message, mask=response.is_null())


@VIEWS.register("trl")
class TrlView(View):
    """TRL's prompt-completion format plus the scores. `conversational=False`: prompt is the user message's
    text, completion the response; `True`: prompt is the message list, completion one assistant message."""

    name = "trl"
    needs = ("prompt_id", "sample_idx", "response", *TRL_SCORES)

    def __init__(self, conversational: bool = False):
        self.conversational = conversational

    def _build(self, table, prompts):
        response = _col(table, "response")
        if self.conversational:
            prompt, completion = messages_array(prompts, table.num_rows), _assistant_messages(response)
        else:
            messages_array(prompts, table.num_rows)  # same checks in both styles
            prompt, completion = user_texts(prompts), response
        out = {"prompt_id": _col(table, "prompt_id"), "sample_idx": _col(table, "sample_idx"),
               "prompt": prompt, "completion": completion}
        out.update({c: _col(table, c) for c in TRL_SCORES + BEHAVIOUR_COLUMNS if c in table.column_names})
        return pa.table(out)


VERL_EXTRA = ["prompt_id", "sample_idx", "response", "reward", "reward_outcome", "advantage", "advantage_grpo",
              "rts", "first_error_step", "is_correct"]


@VIEWS.register("verl")
class VerlView(View):
    """verl's RL parquet layout (data_source, prompt, ability, reward_model, extra_info), one row per rollout.

    ground_truth is the reference answer ("" when missing); a null data_source becomes "unknown", as in
    the score statistics. The SGPO fields ride in extra_info, with `index` the row number."""

    name = "verl"
    needs = ("data_source", "reference_answer", *VERL_EXTRA)

    def __init__(self, ability: str = "math"):
        self.ability = ability

    def _build(self, table, prompts):
        n = table.num_rows
        reward_model = pa.StructArray.from_arrays(
            [pa.repeat("rule", n), pc.fill_null(_col(table, "reference_answer"), "")], names=["style", "ground_truth"])
        extra_info = pa.StructArray.from_arrays(
            [pa.array(np.arange(n, dtype=np.int64))] + [_col(table, c) for c in VERL_EXTRA],
            names=["index", *VERL_EXTRA])
        return pa.table({
            "data_source": pc.fill_null(_col(table, "data_source"), "unknown"),
            "prompt": messages_array(prompts, n),
            "ability": pa.repeat(self.ability, n),
            "reward_model": reward_model,
            "extra_info": extra_info,
        })


@VIEWS.register("stepwise")
class StepwiseView(View):
    """TRL's stepwise-supervision format (prompt, completions = steps, labels), i.e. PRM training data.

    Kept rows: judge_status 'ok' with a first_error_step in -1..K-1 and K > 0 steps; every other row
    (skipped_correct, parse_error, error, out-of-range verdicts) is left out. Label of step j is True
    before the first error k and False from it on. When the judge found no error (k = -1), a correct
    response is all True; a wrong one (is_correct False or null, as in scoring) has its final step as
    the error, so all True but the last. Steps are stripped of surrounding whitespace."""

    name = "stepwise"
    needs = ("prompt_id", "sample_idx", "is_correct", "steps", "first_error_step", "judge_status")

    def _build(self, table, prompts):
        messages_array(prompts, table.num_rows)
        keep, error_at = self.select(table)
        steps = _col(table, "steps").take(pa.array(keep))
        offsets = steps.offsets.to_numpy() - steps.offsets[0].as_py()
        parent = np.repeat(np.arange(len(keep)), np.diff(offsets))
        position = np.arange(len(parent)) - offsets[parent]
        offsets = pa.array(offsets.astype(np.int32))
        return pa.table({
            "prompt_id": _col(table, "prompt_id").take(keep),
            "sample_idx": _col(table, "sample_idx").take(keep),
            "prompt": user_texts([prompts[i] for i in keep]),
            "completions": pa.ListArray.from_arrays(offsets, pc.utf8_trim_whitespace(steps.flatten())),
            "labels": pa.ListArray.from_arrays(offsets, pa.array(position < error_at[keep][parent])),
        })

    @staticmethod
    def select(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers this view keeps, and per row of the table the index of the first False label."""
        correct = pc.fill_null(_col(table, "is_correct"), False).to_numpy(zero_copy_only=False)
        k = pc.fill_null(_col(table, "first_error_step"), -2).to_numpy(zero_copy_only=False).astype(np.int64)
        n = pc.fill_null(pc.list_value_length(_col(table, "steps")), 0).to_numpy(zero_copy_only=False)
        ok = pc.fill_null(pc.equal(_col(table, "judge_status"), JudgeStatus.OK), False).to_numpy(zero_copy_only=False)
        keep = np.flatnonzero(ok & (n > 0) & (k >= -1) & (k < n))
        error_at = np.where(k >= 0, k, np.where(correct, n, n - 1))
        return keep, error_at
