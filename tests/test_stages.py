"""The stages' own rules, without a model: rows in error in scoring, the declared columns, and the trainer's
refusal to fall back to unfiltered rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sgpo_data.config import Recipe
from sgpo_data.errors import SgpoError
from sgpo_data.export import get_view
from sgpo_data.pipeline import Shard
from sgpo_data.schema import JUDGE_SCHEMA, SCORE_SCHEMA
from sgpo_data.stages import get_stage
from tests.helpers import judged_row, judged_run, make_run


def test_rows_in_error_take_no_part_in_scoring_and_their_group_is_scored_over_the_rest():
    rows = [judged_row("p", 0, 0), judged_row("p", 1, 1), judged_row("p", 2, None, "skipped_no_response", False),
            judged_row("p", 3, 2), judged_row("q", 0, 1), judged_row("q", 1, None, "error")]
    table = pa.Table.from_pylist(rows, schema=JUDGE_SCHEMA)
    stage = get_stage("score")(Recipe())
    result = stage.process(Shard(0, "fp", table.num_rows, table=table))
    out = result.table
    assert out.schema == SCORE_SCHEMA
    assert [(r["prompt_id"], r["sample_idx"]) for r in out.to_pylist()] == [(r["prompt_id"], r["sample_idx"]) for r in rows]
    reward, advantage = out["reward"].to_pylist(), out["advantage"].to_pylist()
    assert reward[2] is None and advantage[2] is None and reward[5] is None and advantage[5] is None
    r = np.array([reward[0], reward[1], reward[3]])
    expected = (r - r.mean()) / (r.std(ddof=1) + 1e-4)  # TRL's formula over the group's 3 remaining rows
    assert [advantage[0], advantage[1], advantage[3]] == pytest.approx(expected.tolist(), abs=1e-5)
    assert advantage[4] == 0.0  # one row left: no baseline
    stats = stage.statistics([result.stats])
    assert stats["rows_in_error"] == 2 and stats["groups_with_rows_in_error"] == 2 and stats["judge_errors"] == 1
    assert stats["responses"] == 4  # the statistics are over the rows that were scored


def test_every_stage_declares_what_it_needs_and_adds():
    needs = set()
    for name in ("generate", "judge", "score", "export"):
        stage = get_stage(name)(Recipe())
        assert set(stage.needs) >= needs  # each stage needs what the ones before it produced
        needs = set(stage.needs) | {f.name for f in stage.adds}
    assert needs == set(SCORE_SCHEMA.names)
    assert get_stage("generate")(Recipe()).status_column == "generate_status"


def test_the_runner_names_the_missing_columns_of_a_stage_s_input_and_a_stage_that_drops_columns(tmp_path):
    from sgpo_data.pipeline.stage import ShardOutput, check_output, require_input

    path = tmp_path / "generate" / "part-00000.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"prompt_id": ["p"], "response": ["x"]}), path)
    judge = get_stage("judge")(Recipe())
    with pytest.raises(SgpoError, match=r"part-00000.parquet: missing column\(s\) problem, .*run `sgpo-data generate"):
        require_input(judge, Shard(0, "fp", 1, paths=[path]))
    table = pa.Table.from_pylist([judged_row("p", 0, 1)], schema=JUDGE_SCHEMA)
    score = get_stage("score")(Recipe())
    shard = Shard(0, "fp", 1, table=table)
    check_output(score, shard, score.process(shard).table)
    with pytest.raises(SgpoError, match=r"stage score: the rows of shard 0 lack column\(s\) problem, rts, reward"):
        check_output(score, shard, ShardOutput(table).table.drop_columns(["problem"]))


def test_the_trainer_never_falls_back_to_unfiltered_rows(tmp_path):
    from sgpo_data.train.data import read_table

    run = make_run(tmp_path / "run")  # generate, judge and score, but no export
    with pytest.raises(SgpoError, match="export is missing or incomplete; run `sgpo-data export"):
        read_table(str(run))


def test_a_run_whose_every_row_failed_still_scores_and_counts_them():
    rows = [judged_row("p", i, None, "skipped_no_response", False) for i in range(3)]
    table = pa.Table.from_pylist(rows, schema=JUDGE_SCHEMA)
    stage = get_stage("score")(Recipe())
    result = stage.process(Shard(0, "fp", table.num_rows, table=table))
    out = result.table
    assert out.num_rows == 3 and out["reward"].null_count == 3 and out["advantage"].null_count == 3
    stats = stage.statistics([result.stats])
    assert stats["rows_in_error"] == 3 and stats["responses"] == 0 and stats["accuracy"] is None


def rounded(value):
    """Floats rounded in any nesting, to compare statistics summed in another order."""
    if isinstance(value, dict):
        return {key: rounded(v) for key, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return round(value, 9) if isinstance(value, float) else value


@pytest.mark.parametrize("advantage", ["group", "batch"])
def test_scoring_part_by_part_gives_the_whole_run_s_rewards_advantages_and_statistics(tmp_path, advantage):
    from sgpo_data.config import load_recipe
    from sgpo_data.stages import run_stage
    from sgpo_data.run_reader import read_stage
    from sgpo_data.scoring import score_stats, score_table

    rows = [judged_row("p", 0, 0), judged_row("p", 1, 3), judged_row("p", 2, None, "error"), judged_row("q", 0, 1),
            judged_row("q", 1, 2), judged_row("r", 0, -1), judged_row("r", 1, 0), judged_row("r", 2, None, "error")]
    table = judged_run(tmp_path, rows, cut=5)
    recipe = load_recipe(None, [f"score.advantage={advantage}"])
    manifest = run_stage("score", recipe, tmp_path).manifest
    out = read_stage(tmp_path, "score")
    whole = score_table(table.filter(pa.array(~np.isin(np.arange(8), [2, 7]))), recipe.score)
    kept = [i for i in range(8) if i not in (2, 7)]
    assert [out["advantage"][i].as_py() for i in kept] == pytest.approx(whole["advantage"].to_pylist(), abs=1e-6)
    assert [out["reward"][i].as_py() for i in kept] == pytest.approx(whole["reward"].to_pylist(), abs=1e-6)
    expected = score_stats(whole)
    stats = manifest["statistics"]
    expected.pop("judge_errors")  # the stage counts the rows in error too (below)
    assert rounded({key: stats[key] for key in expected}) == rounded(expected)
    assert stats["rows_in_error"] == 2 and stats["groups_with_rows_in_error"] == 2 and stats["judge_errors"] == 2


def test_exporting_part_by_part_gives_the_views_of_the_whole_run(tmp_path):
    """Score and export stream one part at a time; every view equals the view built from the whole table."""
    from datasets import load_from_disk

    from sgpo_data.config import load_recipe
    from sgpo_data.export import split_by_prompt
    from sgpo_data.stages import run_stage
    from sgpo_data.run_reader import export_view, read_stage
    from sgpo_data.schema import error_rows
    from sgpo_data.stages.publish import row_prompts

    rows = [judged_row(f"p{i}", j, (i + j) % 5 - 1) for i in range(8) for j in range(3)]
    rows[4] = judged_row("p1", 1, None, "error")
    judged_run(tmp_path, rows, cut=12)
    views = ["flat", "grouped", "prompts", "trl", "verl", "stepwise"]
    recipe = load_recipe(None, ["export.test_size=0.25", "export.card=false", f"export.views={views}"])
    run_stage("score", recipe, tmp_path)
    assert run_stage("export", recipe, tmp_path).manifest["statistics"]["export"]["rows_in_error_left_out"] == 1
    scored = read_stage(tmp_path, "score")
    splits = split_by_prompt(scored.filter(pa.array(~error_rows(scored))), 0.25, recipe.export.split_seed)
    assert {split: t.num_rows for split, t in splits.items()} == {"train": 17, "test": 6}
    for name in views:
        for split, table in splits.items():
            view = get_view(name, next(v.options for v in recipe.export.views if v.name == name))  # a fresh view
            expected = view.build(table, row_prompts(tmp_path, table))
            assert export_view(tmp_path, name, split).to_pylist() == expected.to_pylist(), (name, split)
            assert load_from_disk(str(tmp_path / "export" / "hf" / name))[split].to_list() == expected.to_pylist()
    assert len(read_stage(tmp_path, "export")) == len(rows)  # the run's record keeps every row


def test_a_view_split_without_rows_still_loads(tmp_path):
    from datasets import load_from_disk

    from sgpo_data.stages.publish import _Writers

    writers = _Writers(tmp_path, ["parquet", "hf"], "fp")
    table = pa.table({"x": [1, 2, 3], "y": [["a"], [], None]})
    writers.write("v", "train", table.slice(0, 2))
    writers.write("v", "test", table.slice(0, 0))
    writers.write("v", "train", table.slice(2))
    writers.close()
    loaded = load_from_disk(str(tmp_path / "hf" / "v"))
    assert loaded["train"].to_list() == table.to_pylist() and loaded["test"].num_rows == 0
    assert loaded["test"].features == loaded["train"].features
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["test-00000-of-00001.parquet",
                                                                  "train-00000-of-00001.parquet"]


def test_a_marker_without_a_tally_asks_to_redo_the_stage():
    stage = get_stage("score")(Recipe())
    with pytest.raises(SgpoError, match="written by an older sgpo-data .* redo the stage with --overwrite"):
        stage.statistics([{"usage": {}}])


def no_reference_row(prompt_id: str, idx: int) -> dict:
    """A wrong-looking row whose prompt had no reference answer: no outcome (is_correct null)."""
    row = judged_row(prompt_id, idx, 1)
    row.update(is_correct=None, grade_status="no_reference")
    return row


def test_rows_without_a_reference_are_refused_for_scoring_unless_the_recipe_excludes_them(tmp_path):
    from sgpo_data.config import load_recipe
    from sgpo_data.stages import run_stage
    from sgpo_data.run_reader import read_stage

    rows = [judged_row("p", 0, 0), judged_row("p", 1, 2), no_reference_row("q", 0), no_reference_row("q", 1)]
    judged_run(tmp_path, rows, cut=2)
    with pytest.raises(SgpoError, match=r"2 row\(s\) have no reference answer .*prompt_id='q'.*score.no_reference=exclude"):
        run_stage("score", load_recipe(None, []), tmp_path)
    recipe = load_recipe(None, ["score.no_reference=exclude", "export.card=false"])
    stats = run_stage("score", recipe, tmp_path, overwrite=True).manifest["statistics"]
    out = {row["prompt_id"] + str(row["sample_idx"]): row for row in read_stage(tmp_path, "score").to_pylist()}
    for key in ("q0", "q1"):  # no reward, no advantage, no group: nothing is made up for them
        assert all(out[key][c] is None for c in ("rts", "reward", "reward_outcome", "advantage", "advantage_grpo",
                                                 "group_all_negative"))
        assert out[key]["grade_status"] == "no_reference"  # the status says why
    assert out["p0"]["reward"] is not None and out["p0"]["advantage"] != 0
    assert stats["rows_without_reference"] == 2 and stats["rows_in_error"] == 0
    assert stats["prompts"] == 1 and stats["responses"] == 2 and stats["all_negative_groups"] == 1
    run_stage("export", recipe, tmp_path)
    from sgpo_data.run_reader import export_view

    for view in ("flat", "trl", "grouped"):
        assert "q" not in {r["prompt_id"] for r in export_view(tmp_path, view).to_pylist() if "prompt_id" in r}
    assert len(export_view(tmp_path, "trl")) == 2


def test_prompts_without_a_reference_are_refused_before_generate_loads_a_model(tmp_path):
    import json

    from sgpo_data.config import load_recipe
    from sgpo_data.stages import run_stage

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{i} + 1?", "solution": "s", "answer": a}) + "\n"
                            for i, a in enumerate(["1", None, " "])))
    recipe = load_recipe(None, [f"data.source={data}", "generate.model=/nonexistent/model"])  # a load would fail
    with pytest.raises(SgpoError, match=r"2 of 3 prompt\(s\) have no reference answer.*score.no_reference=exclude"):
        run_stage("generate", recipe, tmp_path / "run")


def test_readers_refuse_stages_made_from_an_upstream_that_was_redone(tmp_path):
    from sgpo_data.config import load_recipe
    from sgpo_data.stages import run_stage
    from sgpo_data.pipeline.folder import StageFolder
    from sgpo_data.report import write_report
    from sgpo_data.run_reader import StageFiles, export_view, read_stage

    rows = [judged_row("p", 0, 0), judged_row("p", 1, 2), judged_row("q", 0, 1), judged_row("q", 1, -1)]
    table = judged_run(tmp_path, rows, cut=2)
    recipe = load_recipe(None, ["export.card=false"])
    run_stage("score", recipe, tmp_path)
    run_stage("export", recipe, tmp_path)
    assert len(export_view(tmp_path, "flat")) == 4  # current: readable
    generate = StageFolder(tmp_path, "generate")  # generate redone (a retry, or --overwrite): shard 1 changed
    generate.write_shard(1, table.slice(2, 1), "in-1", {}, {"tally": {}})
    generate.finish({0: "in-0", 1: "in-1"}, lambda markers: {})
    for stage in ("judge", "score", "export"):
        with pytest.raises(SgpoError, match=r"judge is out of date: generate was redone after it was made.*"
                                            r"rerun `sgpo-data judge --out"):
            StageFiles(tmp_path, stage).require_complete()
    with pytest.raises(SgpoError, match="out of date"):
        read_stage(tmp_path, "score")
    with pytest.raises(SgpoError, match="out of date"):
        export_view(tmp_path, "flat")  # what `sgpo-data train --data RUN` reads
    with pytest.raises(SgpoError, match="out of date"):
        write_report(tmp_path)
    with pytest.raises(SgpoError, match="out of date"):
        run_stage("score", recipe, tmp_path)  # a stage run on its own refuses a stale upstream too


def test_processes_that_complete_export_together_publish_once(tmp_path, monkeypatch):
    """Two `--shard` processes may both see the export stage complete: the publish lock lets one write the views
    while the other waits, then finds them made from the same record and writes nothing."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from sgpo_data.config import load_recipe
    from sgpo_data.pipeline.runner import run_stage as run_one
    from sgpo_data.stages import publish, run_stage

    judged_run(tmp_path, [judged_row(f"p{i}", j, (i + j) % 3 - 1) for i in range(4) for j in range(2)], cut=4)
    recipe = load_recipe(None, ["export.card=false", "export.formats=[parquet]"])
    run_stage("score", recipe, tmp_path)
    run_one(get_stage("export")(recipe), tmp_path)  # complete, not yet published
    writes = []
    original = publish.Publisher._write_parts

    def counting(self, *args):
        writes.append(1)
        time.sleep(0.3)  # long enough for the other thread to get here too, were nothing stopping it
        return original(self, *args)

    monkeypatch.setattr(publish.Publisher, "_write_parts", counting)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: publish.publish(recipe, tmp_path), range(2)))
    assert len(writes) == 1 and results[0] == results[1] and results[0]["rows_after_filters"] == 8
