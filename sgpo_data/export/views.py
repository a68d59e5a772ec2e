"""Export views: the scored run table reshaped for the tools people train with.

A view names the columns it needs and builds one Arrow table from the scored rows and `prompts`: one
list of chat messages (`{"role", "content"}`) per row, exactly as the policy saw them. Views are chosen
by name, options validated by the view's own model: `get_view("trl", {"conversational": True}).build(table, prompts)`.
Column operations only (pyarrow + numpy); the only Python loops walk the caller's message lists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

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


def messages_array(prompts: list | pa.ListArray, n_rows: int) -> pa.ListArray:
    """The caller's per-row chat messages as list<struct<role, content>>, checked row by row (an array built by
    this function once is passed through, so the views of one table share it)."""
    if len(prompts) != n_rows:
        raise SgpoError(f"export: got {len(prompts)} prompt(s) for {n_rows} row(s); pass one message list per row")
    if isinstance(prompts, pa.Array) and prompts.type == MESSAGES:
        return prompts
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


def user_texts(prompts: pa.ListArray) -> pa.Array:
    """The chat-template-free prompt of each row: the content of its last user message."""
    texts = []
    for i, messages in enumerate(prompts.to_pylist()):
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


# Every view registers itself here, in its own file of the export package (found on first use).
VIEWS: Registry[View] = Registry("export view", package="sgpo_data.export")


def get_view(name: str, options: dict | None = None, key: str = "export.views") -> View:
    """The view `name`, its options validated by the view's own model."""
    return VIEWS.get(name, **VIEWS.options(name, options, f"{key}[{name}].options").model_dump())


@VIEWS.register("flat")
class FlatView(View):
    """Every contract column, then any extra columns the run carries; one row per rollout. Ignores prompts."""

    name = "flat"
    needs = tuple(CONTRACT_COLUMNS)

    def _build(self, table, prompts):
        extra = [c for c in table.column_names if c not in SCORE_SCHEMA.names]
        return pa.table({c: _col(table, c) for c in CONTRACT_COLUMNS + extra})


GROUP_SCALARS = ["prompt_id", "problem", "reference_solution", "reference_answer", "data_source"]
GROUP_LISTS = {"sample_idxs": "sample_idx", "responses": "response", "finish_reasons": "finish_reason",
               "is_correct": "is_correct", "rewards": "reward", "rewards_outcome": "reward_outcome",
               "advantages": "advantage", "advantages_grpo": "advantage_grpo", "first_error_steps": "first_error_step"}


class Groups:
    """The rows sorted by (group in order of first appearance, sample_idx): `rows`, `order` (their row numbers in
    the table), `offsets` (where each group starts in `rows`, plus the end) and `heads` (each group's first row)."""

    def __init__(self, table: pa.Table, where: str):
        codes = group_codes(table, where)
        self.num_rows = table.num_rows
        self.order = pc.sort_indices(pa.table({"g": codes, "s": _col(table, "sample_idx")}),
                                     [("g", "ascending"), ("s", "ascending")])
        self.rows = table.take(self.order)
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(codes))]).astype(np.int32)
        self.heads = pa.array(self.offsets[:-1])

    def first(self, name: str) -> pa.Array:
        return _col(self.rows, name).take(self.heads)

    def lists(self, name: str) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(self.offsets), _col(self.rows, name))

    def pass_rate(self) -> pa.Array:
        """Share of each group's responses that are correct (ungradable counts as wrong)."""
        correct = pc.fill_null(_col(self.rows, "is_correct"), False).to_numpy(zero_copy_only=False)
        sums = np.add.reduceat(correct.astype(np.float64), self.offsets[:-1]) if len(correct) else np.zeros(0)
        return pa.array((sums / np.diff(self.offsets)).astype(np.float32))

    def messages(self, prompts: list) -> pa.ListArray:
        return messages_array(prompts, self.num_rows).take(self.order).take(self.heads)


@VIEWS.register("grouped")
class GroupedView(View):
    """One row per prompt (order of first appearance); per-sample lists ordered by sample_idx."""

    name = "grouped"
    needs = (*GROUP_SCALARS, *GROUP_LISTS.values(), "group_all_negative")

    def _build(self, table, prompts):
        groups = Groups(table, "export view 'grouped'")
        out = {c: groups.first(c) for c in GROUP_SCALARS}
        out["prompt"] = groups.messages(prompts)
        out.update({name: groups.lists(column) for name, column in GROUP_LISTS.items()})
        out["group_all_negative"] = groups.first("group_all_negative")
        return pa.table(out)


@VIEWS.register("prompts")
class PromptsView(View):
    """One row per prompt, for online trainers (TRL's GRPOTrainer, verl) that sample their own completions:
    the chat prompt, the reference answer as `solution` (the column TRL's `accuracy_reward` and `SGPOReward`
    read; "" when missing), the reference solution for the judge, and how the run's policy did on it."""

    name = "prompts"
    needs = ("prompt_id", "sample_idx", "problem", "reference_solution", "reference_answer", "data_source",
             "is_correct")

    def _build(self, table, prompts):
        groups = Groups(table, "export view 'prompts'")
        return pa.table({
            "prompt_id": groups.first("prompt_id"),
            "prompt": groups.messages(prompts),
            "problem": groups.first("problem"),
            "solution": pc.fill_null(groups.first("reference_answer"), ""),
            "reference_solution": groups.first("reference_solution"),
            "data_source": pc.fill_null(groups.first("data_source"), "unknown"),
            "pass_rate": groups.pass_rate(),
        })


TRL_SCORES = ["advantage", "advantage_grpo", "reward", "reward_outcome"]
BEHAVIOUR_COLUMNS = ["response_logprobs", "response_token_ids"]  # for offline importance ratios, when present


def _assistant_messages(response: pa.Array) -> pa.ListArray:
    """[{"role": "assistant", "content": response}] per row; null where the response is null."""
    n = len(response)
    message = pa.StructArray.from_arrays([pa.repeat("assistant", n), response], fields=list(MESSAGE))
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), message, mask=response.is_null())


class TrlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversational: bool = Field(True, description="prompt as chat messages and completion as one assistant message "
                                 "(True), or both as plain text")


@VIEWS.register("trl", options=TrlOptions)
class TrlView(View):
    """TRL's prompt-completion format plus the scores and `finish_reason`. `conversational=False`: prompt is the
    user message's text, completion the response; `True`: prompt is the message list, completion one assistant
    message. A chat template closes every assistant message with its end-of-turn token, which a response cut
    at the token limit never produced, so the conversational style leaves such rows out (`left_out` counts
    them; the plain style and the `flat` view keep them)."""

    name = "trl"
    needs = ("prompt_id", "sample_idx", "response", "finish_reason", *TRL_SCORES)

    def __init__(self, conversational: bool = True):
        self.conversational = conversational
        self.left_out = 0

    def _build(self, table, prompts):
        prompts = messages_array(prompts, table.num_rows)  # same checks in both styles
        if self.conversational:
            cut = pc.fill_null(pc.equal(_col(table, "finish_reason"), "length"), False)
            keep = pa.array(np.flatnonzero(~cut.to_numpy(zero_copy_only=False)))
            self.left_out += table.num_rows - len(keep)
            table, prompts = table.take(keep), prompts.take(keep)
        response = _col(table, "response")
        if self.conversational:
            prompt, completion = prompts, _assistant_messages(response)
        else:
            prompt, completion = user_texts(prompts), response
        out = {"prompt_id": _col(table, "prompt_id"), "sample_idx": _col(table, "sample_idx"),
               "prompt": prompt, "completion": completion, "finish_reason": _col(table, "finish_reason")}
        out.update({c: _col(table, c) for c in TRL_SCORES + BEHAVIOUR_COLUMNS if c in table.column_names})
        return pa.table(out)


class VerlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ability: str = Field("math", description="verl's `ability` column: the task family of every row")


@VIEWS.register("verl", options=VerlOptions)
class VerlView(View):
    """verl's RL parquet layout (data_source, prompt, ability, reward_model, extra_info), one row per prompt:
    verl samples its own responses and scores them with `sgpo_data.integrations.verl.compute_score`, which
    takes any data_source and reads problem, reference_solution and prompt_id from extra_info.

    ground_truth is the reference answer ("" when missing); a null data_source becomes "unknown", as in the
    score statistics; extra_info's `index` is the row number and `pass_rate` the run's share of right answers."""

    name = "verl"
    needs = ("prompt_id", "sample_idx", "problem", "reference_solution", "reference_answer", "data_source",
             "is_correct")

    def __init__(self, ability: str = "math"):
        self.ability = ability
        self.built = 0  # rows built so far: a table built in parts numbers its rows on from the last part

    def _build(self, table, prompts):
        groups = Groups(table, "export view 'verl'")
        n = len(groups.heads)
        start, self.built = self.built, self.built + n
        reward_model = pa.StructArray.from_arrays(
            [pa.repeat("rule", n), pc.fill_null(groups.first("reference_answer"), "")], names=["style", "ground_truth"])
        extra_info = pa.StructArray.from_arrays(
            [pa.array(np.arange(start, start + n, dtype=np.int64)), groups.first("prompt_id"), groups.first("problem"),
             groups.first("reference_solution"), groups.pass_rate()],
            names=["index", "prompt_id", "problem", "reference_solution", "pass_rate"])
        return pa.table({
            "data_source": pc.fill_null(groups.first("data_source"), "unknown"),
            "prompt": groups.messages(prompts),
            "ability": pa.repeat(self.ability, n),
            "reward_model": reward_model,
            "extra_info": extra_info,
        })


@VIEWS.register("stepwise")
class StepwiseView(View):
    """Stepwise supervision (prompt, completions = steps, labels): process-reward-model data labelled by the judge,
    in the format of TRL's PRMTrainer (TRL < 1.16) and of PRM fine-tuning scripts that read those three columns.

    Kept rows: a judged row (judge_status 'ok') with a first_error_step in -1..K-1, and a correct response the
    judge did not look at (skipped_correct, skipped_scope), all of them with K > 0 steps; rows the judge failed
    on are left out. Label of step j is True before the first error k and False from it on. A correct response
    is all True unless the judge (scope `all`) put an error in it; a wrong one where the judge found none
    (k = -1) has its final step as the error, as in scoring. `completions` are the steps without the whitespace
    around them; `separators` (K + 1 strings) is that whitespace, so
    separators[0] + completions[0] + separators[1] + ... + completions[K-1] + separators[K] is the segmented text."""

    name = "stepwise"
    needs = ("prompt_id", "sample_idx", "is_correct", "steps", "first_error_step", "judge_status")

    def _build(self, table, prompts):
        prompts = messages_array(prompts, table.num_rows)
        keep, error_at = self.select(table)
        steps = _col(table, "steps").take(pa.array(keep))
        offsets = steps.offsets.to_numpy() - steps.offsets[0].as_py()
        parent = np.repeat(np.arange(len(keep)), np.diff(offsets))
        position = np.arange(len(parent)) - offsets[parent]
        lead, core, trail = self.trim(steps.flatten())
        lists = pa.array(offsets.astype(np.int32))
        return pa.table({
            "prompt_id": _col(table, "prompt_id").take(keep),
            "sample_idx": _col(table, "sample_idx").take(keep),
            "prompt": user_texts(prompts.take(pa.array(keep))),
            "completions": pa.ListArray.from_arrays(lists, core),
            "labels": pa.ListArray.from_arrays(lists, pa.array(position < error_at[keep][parent])),
            "separators": self.separators(lead, trail, offsets),
        })

    @staticmethod
    def trim(steps: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
        """(lead, core, trail) per step, lead + core + trail == step, whitespace being RE2's \\s ([\\t\\n\\f\\r ]).
        Two anchored regexes and a trim: one regex with a lazy middle group measured 15x slower."""
        core = pc.utf8_trim(steps, " \t\n\f\r")
        lead = pc.extract_regex(steps, r"^(?P<lead>\s*)").field("lead")
        trail = pc.extract_regex(steps, r"(?P<trail>\s*)$").field("trail")
        return lead, core, pc.if_else(pc.equal(core, ""), "", trail)  # a blank step is all lead

    @staticmethod
    def separators(lead: pa.Array, trail: pa.Array, offsets: np.ndarray) -> pa.ListArray:
        """Per row [lead of step 0, trail of step j-1 + lead of step j ..., trail of step K-1]."""
        n, k = len(lead), np.diff(offsets)
        new_offsets = np.concatenate([[0], np.cumsum(k + 1)]).astype(np.int32)
        row = np.repeat(np.arange(len(k)), k + 1)
        p = np.arange(new_offsets[-1]) - new_offsets[row]
        start, count = offsets[:-1][row], k[row]
        mid = pc.binary_join_element_wise(trail[:-1], lead[1:], "") if n else pa.array([], pa.string())
        # positions in concat(lead, mid, trail): lead at i, mid at n + i, trail at 2n - 1 + i
        index = np.where(p == 0, start, np.where(p == count, 2 * n - 1 + start + count - 1, n + start + p - 1))
        pool = pa.concat_arrays([lead.cast(pa.string()), mid.cast(pa.string()), trail.cast(pa.string())])
        return pa.ListArray.from_arrays(pa.array(new_offsets), pool.take(pa.array(index.astype(np.int64))))

    @staticmethod
    def select(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers this view keeps, and per row of the table the index of the first False label."""
        correct = pc.fill_null(_col(table, "is_correct"), False).to_numpy(zero_copy_only=False)
        k = pc.fill_null(_col(table, "first_error_step"), -2).to_numpy(zero_copy_only=False).astype(np.int64)
        n = pc.fill_null(pc.list_value_length(_col(table, "steps")), 0).to_numpy(zero_copy_only=False)
        ok = pc.fill_null(pc.equal(_col(table, "judge_status"), JudgeStatus.OK), False).to_numpy(zero_copy_only=False)
        keep = np.flatnonzero((n > 0) & ((ok & (k >= -1) & (k < n)) | (correct & ~ok)))
        error_at = np.where(ok & (k >= 0), k, np.where(correct, n, n - 1))
        return keep, error_at
