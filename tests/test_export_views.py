"""Export views, filters and splits over small synthetic scored tables (and the demo run when present)."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo_data.errors import SgpoError
from sgpo_data.export import MESSAGES, VIEWS, apply_filters, get_view, split_by_prompt
from sgpo_data.schema import CONTRACT_COLUMNS, SCORE_SCHEMA

F32, I32, STR, BOOL = pa.float32(), pa.int32(), pa.string(), pa.bool_()


def scored_rows(n_prompts: int = 3, g: int = 4, seed: int = 0) -> list[dict]:
    """Rows with every SCORE_SCHEMA column, in shuffled order; prompt p has p correct samples (capped)."""
    rnd = random.Random(seed)
    rows = []
    for p in range(n_prompts):
        for s in range(g):
            correct = s < p
            steps = [f"step {j}\n\n" for j in range(1 + (s + p) % 3)]
            fes = None if correct else (s % (len(steps) + 1)) - 1
            rows.append({
                "prompt_id": f"p{p}", "problem": f"What is {p} + {s}?", "reference_solution": f"{p}+{s}",
                "reference_answer": None if p == 1 else str(p), "data_source": "synthetic", "sample_idx": s,
                "response": "".join(steps), "finish_reason": "stop", "policy_model": "m",
                "response_tokens": 10 * (s + 1), "response_logprobs": [-0.5] * 3, "response_token_ids": [1, 2, 3],
                "pred_answer": str(p if correct else -1), "is_correct": correct, "grade_status": "ok",
                "steps": steps, "first_error_step": fes, "judge_status": "skipped_correct" if correct else "ok",
                "judge_model": None if correct else "j", "judge_raw": None if correct else str(fes),
                "rts": None if correct else 0.5, "reward": 1.0 if correct else 0.5, "reward_outcome": float(correct),
                "advantage": float(s) - 1.5, "advantage_grpo": 0.0 if p == 0 else float(correct) - 0.5,
                "group_all_negative": p == 0,
            })
    rnd.shuffle(rows)
    return rows


def scored(n_prompts: int = 3, g: int = 4, seed: int = 0) -> pa.Table:
    return pa.Table.from_pylist(scored_rows(n_prompts, g, seed), schema=SCORE_SCHEMA)


def prompts_for(table: pa.Table) -> list[list[dict]]:
    return [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]
            for q in table["problem"].to_pylist()]


def types(table: pa.Table) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in table.schema]


SCORES = [("advantage", F32), ("advantage_grpo", F32), ("reward", F32), ("reward_outcome", F32)]
BEHAVIOUR = [("response_logprobs", pa.list_(F32)), ("response_token_ids", pa.list_(I32))]
EXPECTED = {
    "flat": [(f.name, f.type) for f in SCORE_SCHEMA],
    "grouped": [("prompt_id", STR), ("problem", STR), ("reference_solution", STR), ("reference_answer", STR),
                ("data_source", STR), ("prompt", MESSAGES), ("sample_idxs", pa.list_(I32)),
                ("responses", pa.list_(STR)), ("finish_reasons", pa.list_(STR)), ("is_correct", pa.list_(BOOL)),
                ("rewards", pa.list_(F32)), ("rewards_outcome", pa.list_(F32)), ("advantages", pa.list_(F32)),
                ("advantages_grpo", pa.list_(F32)), ("first_error_steps", pa.list_(I32)),
                ("group_all_negative", BOOL)],
    "prompts": [("prompt_id", STR), ("prompt", MESSAGES), ("problem", STR), ("solution", STR),
                ("reference_solution", STR), ("data_source", STR), ("pass_rate", F32)],
    "trl": [("prompt_id", STR), ("sample_idx", I32), ("prompt", STR), ("completion", STR), ("finish_reason", STR),
            *SCORES, *BEHAVIOUR],
    "verl": [("data_source", STR), ("prompt", MESSAGES), ("ability", STR),
             ("reward_model", pa.struct([("style", STR), ("ground_truth", STR)])),
             ("extra_info", pa.struct([("index", pa.int64()), ("prompt_id", STR), ("problem", STR),
                                       ("reference_solution", STR), ("pass_rate", F32)]))],
    "stepwise": [("prompt_id", STR), ("sample_idx", I32), ("prompt", STR), ("completions", pa.list_(STR)),
                 ("labels", pa.list_(BOOL)), ("separators", pa.list_(STR))],
}


def test_registry_lists_every_view_and_rejects_unknown_names():
    assert VIEWS.names() == sorted(EXPECTED)
    with pytest.raises(SgpoError, match="unknown export view 'openrlhf'; valid names: flat, grouped"):
        get_view("openrlhf")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_view_schema_and_loading_with_datasets(name, tmp_path):
    from datasets import Dataset, DatasetDict, disable_progress_bars, load_dataset, load_from_disk

    disable_progress_bars()
    table = scored()
    view = get_view(name, {"conversational": False} if name == "trl" else None).build(table, prompts_for(table))
    assert types(view) == EXPECTED[name]
    rows = view.to_pylist()

    pq.write_table(view, tmp_path / "view.parquet")
    loaded = load_dataset("parquet", data_files=str(tmp_path / "view.parquet"), cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].column_names == view.column_names
    assert loaded["train"].to_list() == rows

    DatasetDict({"train": Dataset(view)}).save_to_disk(str(tmp_path / "hf"))
    assert load_from_disk(str(tmp_path / "hf"))["train"].to_list() == rows


def test_flat_keeps_every_contract_column_and_extra_columns():
    table = scored().append_column("note", pa.array(["x"] * 12))
    view = get_view("flat").build(table, prompts_for(table))
    assert view.column_names == CONTRACT_COLUMNS + ["note"]
    assert view.num_rows == table.num_rows


def test_grouped_one_row_per_prompt_in_first_appearance_order_lists_by_sample_idx():
    table = scored(n_prompts=4, g=5, seed=3)
    view = get_view("grouped").build(table, prompts_for(table)).to_pylist()
    ids = table["prompt_id"].to_pylist()
    assert [r["prompt_id"] for r in view] == list(dict.fromkeys(ids))
    source = table.to_pylist()
    for row in view:
        assert row["sample_idxs"] == list(range(5))
        mine = sorted((r for r in source if r["prompt_id"] == row["prompt_id"]), key=lambda r: r["sample_idx"])
        assert row["responses"] == [r["response"] for r in mine]
        assert row["advantages"] == [r["advantage"] for r in mine]
        assert row["first_error_steps"] == [r["first_error_step"] for r in mine]
        assert row["prompt"][1]["content"] == mine[0]["problem"]
        assert row["group_all_negative"] == mine[0]["group_all_negative"]


def test_trl_plain_and_conversational_styles():
    table = scored()
    prompts = prompts_for(table)
    plain = get_view("trl", {"conversational": False}).build(table, prompts).to_pylist()
    chat = get_view("trl", {"conversational": True}).build(table, prompts).to_pylist()
    for source, p, c, messages in zip(table.to_pylist(), plain, chat, prompts):
        assert p["prompt"] == source["problem"] and p["completion"] == source["response"]
        assert c["prompt"] == messages
        assert c["completion"] == [{"role": "assistant", "content": source["response"]}]
        assert p["advantage"] == c["advantage"] == source["advantage"]
        assert p["finish_reason"] == c["finish_reason"] == "stop"
    assert types(get_view("trl", {"conversational": True}).build(table, prompts))[2:4] == [
        ("prompt", MESSAGES), ("completion", MESSAGES)]


def test_chat_style_trl_view_leaves_out_responses_cut_at_the_token_limit_and_counts_them():
    rows = scored_rows()
    for row in rows[:5]:
        row["finish_reason"] = "length"
    table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
    chat = get_view("trl", {"conversational": True})
    built = chat.build(table, prompts_for(table))
    assert chat.left_out == 5 and built.num_rows == 7
    assert set(built["finish_reason"].to_pylist()) == {"stop"}
    plain = get_view("trl", {"conversational": False}).build(table, prompts_for(table))  # plain text: nothing renders a chat, all kept
    assert plain["finish_reason"].to_pylist().count("length") == 5


def by_prompt(table: pa.Table) -> dict[str, list[dict]]:
    """Rows by prompt, prompts in order of first appearance, rows by sample_idx (a group's scalars are its first's)."""
    groups: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        groups.setdefault(row["prompt_id"], []).append(row)
    return {p: sorted(rows, key=lambda r: r["sample_idx"]) for p, rows in groups.items()}


def test_prompts_view_one_row_per_prompt_with_solution_and_pass_rate():
    table = scored(n_prompts=4, g=5, seed=3)
    prompts = prompts_for(table)
    view = get_view("prompts").build(table, prompts).to_pylist()
    groups = by_prompt(table)
    assert [r["prompt_id"] for r in view] == list(groups)
    for row in view:
        mine = groups[row["prompt_id"]]
        assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": mine[0]["problem"]}]
        assert row["solution"] == (mine[0]["reference_answer"] or "")  # p1 has no reference answer
        assert row["reference_solution"] == mine[0]["reference_solution"]
        assert row["pass_rate"] == pytest.approx(sum(r["is_correct"] for r in mine) / 5)


def test_verl_view_one_row_per_prompt_with_ground_truth_and_extra_info():
    table = scored()
    view = get_view("verl").build(table, prompts_for(table)).to_pylist()
    groups = by_prompt(table)
    assert [r["extra_info"]["prompt_id"] for r in view] == list(groups)
    for i, row in enumerate(view):
        first = groups[row["extra_info"]["prompt_id"]][0]
        assert row["ability"] == "math" and row["data_source"] == "synthetic"
        assert row["reward_model"] == {"style": "rule", "ground_truth": first["reference_answer"] or ""}
        assert row["extra_info"]["index"] == i
        assert row["extra_info"]["problem"] == first["problem"]
        assert row["extra_info"]["reference_solution"] == first["reference_solution"]


def expected_labels(n_steps: int, k: int, correct: bool) -> list[bool]:
    """The documented convention, one step at a time."""
    error_at = k if k >= 0 else (n_steps if correct else n_steps - 1)
    return [j < error_at for j in range(n_steps)]


judged_row = st.fixed_dictionaries({
    "steps": st.lists(st.text("ab \n\t", max_size=6), min_size=0, max_size=6),
    "status": st.sampled_from(["ok", "ok", "ok", "skipped_correct", "parse_error", "error", None]),
    "correct": st.sampled_from([True, False, None]),
    "k": st.one_of(st.none(), st.integers(-2, 7)),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(judged_row, min_size=1, max_size=12))
def test_stepwise_labels_agree_with_first_error_step_row_by_row(spec):
    rows = [{**scored_rows(1, 1)[0], "sample_idx": i, "steps": r["steps"], "judge_status": r["status"],
             "is_correct": r["correct"], "first_error_step": r["k"]} for i, r in enumerate(spec)]
    table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
    view = get_view("stepwise").build(table, prompts_for(table)).to_pylist()
    judged = [r["status"] == "ok" and r["k"] is not None and -1 <= r["k"] < len(r["steps"]) for r in spec]
    unjudged_right = [r["status"] != "ok" and r["correct"] is True for r in spec]
    kept = [i for i, r in enumerate(spec) if len(r["steps"]) > 0 and (judged[i] or unjudged_right[i])]
    assert [row["sample_idx"] for row in view] == kept
    for row in view:
        r = spec[row["sample_idx"]]
        assert row["completions"] == [s.strip() for s in r["steps"]]
        k = r["k"] if judged[row["sample_idx"]] else -1
        assert row["labels"] == expected_labels(len(r["steps"]), k, r["correct"] is True)
        seps = row["separators"]  # the whitespace between steps: the segmented text comes back exactly
        assert len(seps) == len(r["steps"]) + 1
        assert seps[0] + "".join(c + s for c, s in zip(row["completions"], seps[1:])) == "".join(r["steps"])


def test_stepwise_conventions_for_no_error_found_and_unjudged_correct_responses():
    base = scored_rows(1, 1)[0]
    rows = [{**base, "sample_idx": 0, "steps": ["a", "b", "c"], "is_correct": False, "first_error_step": -1},
            {**base, "sample_idx": 1, "steps": ["a", "b", "c"], "is_correct": True, "first_error_step": -1},
            {**base, "sample_idx": 2, "steps": ["a", "b", "c"], "is_correct": False, "first_error_step": 1},
            {**base, "sample_idx": 3, "steps": ["a", "b"], "is_correct": True, "judge_status": "skipped_correct",
             "first_error_step": None},
            {**base, "sample_idx": 4, "steps": ["a"], "is_correct": False, "judge_status": "skipped_scope",
             "first_error_step": None}]
    table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
    view = get_view("stepwise").build(table, prompts_for(table)).to_pylist()
    assert [r["labels"] for r in view] == [[True, True, False], [True, True, True], [True, False, False], [True, True]]
    assert any(all(r["labels"]) for r in view)  # correct responses give all-True examples


def test_view_needing_the_judge_stage_names_it():
    table = scored().drop_columns(["steps", "first_error_step", "judge_status", "judge_model", "judge_raw"])
    with pytest.raises(SgpoError, match=r"view 'stepwise' needs the judge stage's columns "
                                        r"\(steps, first_error_step, judge_status\); run `sgpo-data judge` first"):
        get_view("stepwise").build(table, prompts_for(table))
    with pytest.raises(SgpoError, match=r"view 'trl' needs the score stage's columns \(advantage\); "
                                        r"run `sgpo-data score` first"):
        get_view("trl").build(scored().drop_columns(["advantage"]), prompts_for(scored()))


def test_bad_prompts_are_refused_with_the_row():
    table = scored()
    with pytest.raises(SgpoError, match="got 11 prompt"):
        get_view("grouped").build(table, prompts_for(table)[:-1])
    bad = prompts_for(table)
    bad[5] = [{"role": "user"}]
    with pytest.raises(SgpoError, match="prompt of row 5"):
        get_view("verl").build(table, bad)
    with pytest.raises(SgpoError, match="row 0 has no user message"):
        get_view("trl", {"conversational": False}).build(table, [[{"role": "system", "content": "x"}]] * table.num_rows)


# ---- filters ----

def test_each_filter_does_what_it_says():
    table = scored(n_prompts=3, g=4)
    rows = table.to_pylist()

    out, counts = apply_filters(table, only_all_negative=True)
    assert {r["prompt_id"] for r in out.to_pylist()} == {"p0"} and counts == {"only_all_negative": 8}

    out, counts = apply_filters(table, drop_zero_advantage_groups=True, column="advantage_grpo")
    assert {r["prompt_id"] for r in out.to_pylist()} == {"p1", "p2"}
    assert counts == {"drop_zero_advantage_groups": 4}
    assert apply_filters(table, drop_zero_advantage_groups=True)[0].num_rows == 12  # SGPO advantages spread

    out, counts = apply_filters(table, min_response_tokens=20, max_response_tokens=30)
    assert sorted({r["response_tokens"] for r in out.to_pylist()}) == [20, 30]
    assert counts == {"min_response_tokens": 3, "max_response_tokens": 3}
    assert out.to_pylist() == [r for r in rows if 20 <= r["response_tokens"] <= 30]  # order kept


def test_dedupe_keeps_the_lowest_sample_idx_of_identical_responses():
    rows = scored_rows(2, 4)  # shuffled, so row order is not sample order
    for r in rows:
        r["response"] = ["a", "b", "a", "c"][r["sample_idx"]]  # the same texts in both groups
    table = pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)
    out, counts = apply_filters(table, dedupe_within_group=True)
    kept = sorted((r["prompt_id"], r["sample_idx"]) for r in out.to_pylist())
    assert kept == [("p0", 0), ("p0", 1), ("p0", 3), ("p1", 0), ("p1", 1), ("p1", 3)]
    assert counts == {"dedupe_within_group": 2}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.booleans(), st.booleans(), st.booleans(),
       st.one_of(st.none(), st.integers(0, 30)), st.one_of(st.none(), st.integers(30, 80)))
def test_filter_counts_add_up_to_the_rows_removed(n_prompts, zero, negative, dedupe, lo, hi):
    table = scored(n_prompts=n_prompts, g=4)
    out, counts = apply_filters(table, drop_zero_advantage_groups=zero, only_all_negative=negative,
                                min_response_tokens=lo, max_response_tokens=hi, dedupe_within_group=dedupe,
                                column="advantage_grpo")
    assert table.num_rows - out.num_rows == sum(counts.values())
    assert out.schema == table.schema
    assert set(counts) == {name for name, on in [("drop_zero_advantage_groups", zero), ("only_all_negative", negative),
                                                 ("min_response_tokens", lo is not None),
                                                 ("max_response_tokens", hi is not None),
                                                 ("dedupe_within_group", dedupe)] if on}


def test_bad_filter_settings_and_missing_columns():
    with pytest.raises(SgpoError, match="min_response_tokens=50 is above max_response_tokens=10"):
        apply_filters(scored(), min_response_tokens=50, max_response_tokens=10)
    with pytest.raises(SgpoError, match="unknown advantage column 'reward'"):
        apply_filters(scored(), drop_zero_advantage_groups=True, column="reward")
    with pytest.raises(SgpoError, match="missing column.*group_all_negative.*sgpo-data score"):
        apply_filters(scored().drop_columns(["group_all_negative"]), only_all_negative=True)


# ---- splits ----

@settings(max_examples=50, deadline=None)
@given(st.integers(2, 30), st.integers(1, 4), st.floats(0.0, 0.95) | st.integers(0, 29), st.integers(0, 2**32))
def test_split_assigns_whole_prompts_with_the_exact_count(n_prompts, g, test_size, seed):
    table = scored(n_prompts=n_prompts, g=g)
    expected = test_size if isinstance(test_size, int) else round(test_size * n_prompts)
    if not 0 <= expected < n_prompts or (test_size and expected == 0):
        with pytest.raises(SgpoError, match="test_size"):
            split_by_prompt(table, test_size, seed)
        return
    splits = split_by_prompt(table, test_size, seed)
    ids = {name: set(part["prompt_id"].to_pylist()) for name, part in splits.items()}
    assert sum(part.num_rows for part in splits.values()) == table.num_rows
    if expected == 0:
        assert list(splits) == ["train"]
        return
    assert not ids["train"] & ids["test"]
    assert len(ids["test"]) == expected and splits["test"].num_rows == expected * g


def test_split_is_deterministic_by_seed_and_ignores_row_order():
    table = scored(n_prompts=40, g=2)
    first = split_by_prompt(table, 0.25, seed=7)
    again = split_by_prompt(table, 0.25, seed=7)
    shuffled = split_by_prompt(scored(n_prompts=40, g=2, seed=99), 0.25, seed=7)
    other = split_by_prompt(table, 0.25, seed=8)
    ids = lambda s: set(s["test"]["prompt_id"].to_pylist())  # noqa: E731
    assert ids(first) == ids(again) == ids(shuffled) and len(ids(first)) == 10
    assert first["test"].equals(again["test"])
    assert ids(first) != ids(other)


@pytest.mark.parametrize("test_size, message", [
    (1.0, r"must be a share in \[0, 1\)"), (-0.1, r"must be a share"), (5, r"must be in 0\.\.4"),
    (0.01, "gives 0 test prompts"), (True, "must be a share"), ("0.1", "must be a share"),
])
def test_bad_split_sizes_are_refused(test_size, message):
    with pytest.raises(SgpoError, match=message):
        split_by_prompt(scored(n_prompts=5), test_size, seed=0)


# ---- a real run of the shipped model ----

def test_every_view_builds_on_a_real_run(pipeline_run):
    from datasets import Dataset

    table = pq.read_table(pipeline_run / "score" / "part-00000.parquet")
    prompts = [[{"role": "user", "content": q}] for q in table["problem"].to_pylist()]
    for name in VIEWS.names():
        view = get_view(name, {"conversational": False} if name == "trl" else None).build(table, prompts)
        assert types(view)[:3] == EXPECTED[name][:3]
        assert Dataset(view).num_rows == view.num_rows
    stepwise = get_view("stepwise").build(table, prompts).to_pylist()
    by_key = {(r["prompt_id"], r["sample_idx"]): r for r in table.to_pylist()}
    for row in stepwise:
        source = by_key[row["prompt_id"], row["sample_idx"]]
        k = -1 if source["first_error_step"] is None else source["first_error_step"]  # None: a right answer, unjudged
        assert row["labels"] == expected_labels(len(source["steps"]), k, source["is_correct"] is True)
