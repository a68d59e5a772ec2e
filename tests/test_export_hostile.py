"""The export stage against hostile use, on runs built without a model: several exports loaded by `datasets` from
one cache, lists and bounds the recipe must refuse, and failures in the middle of writing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sgpo_data.card import card_metadata, render_for_push
from sgpo_data.config import load_recipe
from sgpo_data.errors import SgpoError
from sgpo_data.export import apply_filters
from sgpo_data.stages import run_stage
from sgpo_data.run_reader import StageFiles
from sgpo_data.schema import SCORE_SCHEMA
from tests.helpers import judged_row, judged_run

LEAN = ["export.views=[flat, trl]", "export.formats=[parquet]"]


def scored_run(root: Path, num_prompts: int, samples: int = 3, finish_reason: str = "stop") -> Path:
    """A run whose score stage is complete in two parts; prompt ids carry the folder's name, response lengths
    are 10, 20, 30... within each group."""
    rows = []
    for i in range(num_prompts):
        for j in range(samples):
            row = judged_row(f"{root.name}-p{i}", j, (i + j) % 4 - 1)
            rows.append({**row, "reference_answer": "4", "response_tokens": 10 * (j + 1),
                         "finish_reason": finish_reason})
    judged_run(root, rows, cut=samples * max(1, num_prompts // 2))
    run_stage("score", load_recipe(None, []), root)
    return root


def export(run: Path, overrides: list[str] = (), overwrite: bool = False) -> dict:
    """The export stage's statistics."""
    return run_stage("export", load_recipe(None, [*LEAN, *overrides]), run, overwrite=overwrite) \
        .manifest["statistics"]["export"]


def prompt_ids(loaded) -> list[str]:
    return sorted(loaded["train"]["prompt_id"])


def expected_ids(run: Path) -> list[str]:
    return sorted(pq.read_table(run / "export" / "flat" / "train-00000-of-00001.parquet")["prompt_id"].to_pylist())


def test_exports_of_different_runs_load_their_own_rows_from_one_cache(tmp_path):
    from datasets import load_dataset

    runs = [scored_run(tmp_path / f"run{n}", n) for n in (2, 3, 5)]
    for run in runs:
        export(run)
    cache = str(tmp_path / "cache")
    for run in runs:
        default = load_dataset(str(run / "export"), cache_dir=cache)
        trl = load_dataset(str(run / "export"), "trl", cache_dir=cache)
        assert prompt_ids(default) == expected_ids(run) and default["train"].num_rows == len(expected_ids(run))
        assert trl["train"].num_rows == export_rows(run, "trl")
        assert {p.split("-")[0] for p in trl["train"]["prompt_id"]} == {run.name}


def export_rows(run: Path, view: str) -> int:
    return StageFiles(run, "export").manifest()["statistics"]["export"]["views"][view]["train"]


def test_a_re_export_with_other_filters_is_not_served_from_the_cache(tmp_path):
    from datasets import load_dataset

    run = scored_run(tmp_path / "run", 4)
    cache = str(tmp_path / "cache")
    export(run)
    assert load_dataset(str(run / "export"), cache_dir=cache)["train"].num_rows == 12
    export(run, ["export.max_response_tokens=20"], overwrite=True)
    assert load_dataset(str(run / "export"), cache_dir=cache)["train"].num_rows == 8
    assert load_dataset(str(run / "export"), "trl", cache_dir=cache)["train"].num_rows == 8


def test_the_card_pushed_to_the_hub_keeps_the_export_s_identity(tmp_path):
    runs = [scored_run(tmp_path / f"run{n}", n) for n in (2, 3)]
    identities = []
    for run in runs:
        export(run)
        local = card_metadata((run / "export" / "README.md").read_text())["configs"]
        pushed = card_metadata(render_for_push(run / "export", "me/sgpo"))["configs"]
        assert local == pushed
        identities.append([config["description"] for config in local])
    assert len({d for ids in identities for d in ids}) == 4  # one per view and export


@pytest.mark.parametrize("override, key", [
    ("export.formats=[]", "export.formats"),
    ("export.views=[]", "export.views"),
    ("export.views=[flat, trl, flat]", "export.views"),
    ("export.formats=[hf, hf]", "export.formats"),
])
def test_empty_or_repeated_export_lists_are_refused_when_the_recipe_loads(override, key):
    with pytest.raises(SgpoError, match=rf"invalid recipe key '{key}'") as info:
        load_recipe(None, [override])
    assert "\n" not in str(info.value)


def test_contradictory_length_bounds_are_refused_when_the_recipe_loads():
    with pytest.raises(SgpoError, match="min_response_tokens=50 .*max_response_tokens=10") as info:
        load_recipe(None, ["export.min_response_tokens=50", "export.max_response_tokens=10"])
    assert "\n" not in str(info.value)
    assert load_recipe(None, ["export.min_response_tokens=10", "export.max_response_tokens=10"])


def test_the_filters_give_empty_results_without_failing():
    empty = SCORE_SCHEMA.empty_table()
    on = dict(drop_zero_advantage_groups=True, only_all_negative=True, min_response_tokens=1, max_response_tokens=5,
              dedupe_within_group=True)
    kept, counts = apply_filters(empty, **on)
    assert kept.num_rows == 0 and set(counts.values()) == {0}
    table = pa.table({"response_tokens": pa.array([3, None, 9], pa.int32())})
    kept, counts = apply_filters(table, min_response_tokens=10)
    assert kept.num_rows == 0 and counts == {"min_response_tokens": 3}


def test_filters_that_keep_no_row_are_refused_and_leave_nothing_half_written(tmp_path):
    run = scored_run(tmp_path / "run", 2)
    with pytest.raises(SgpoError, match=r"kept none of the 6 scored rows \(export.min_response_tokens removed 6\)"):
        export(run, ["export.min_response_tokens=1000"])
    assert leftovers(run) == [] and not (run / "export" / "flat").exists()
    assert export(run, ["export.min_response_tokens=20"], overwrite=True)["rows_after_filters"] == 4


def test_a_view_without_rows_is_left_out_of_the_card_and_the_others_load(tmp_path):
    from datasets import load_dataset

    run = scored_run(tmp_path / "run", 2, finish_reason="length")  # the chat-style trl view leaves every row out
    stats = export(run)
    assert stats["views"]["trl"] == {"train": 0} and stats["views"]["flat"] == {"train": 6}
    for card in ((run / "export" / "README.md").read_text(), render_for_push(run / "export", "me/sgpo")):
        assert [c["config_name"] for c in card_metadata(card)["configs"]] == ["flat"]
    assert load_dataset(str(run / "export"), cache_dir=str(tmp_path / "cache"))["train"].num_rows == 6


def leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "export").rglob("*") if p.name.endswith(".tmp"))


@pytest.mark.parametrize("fault", ["filters", "view", "hf"])
def test_a_failure_mid_export_surfaces_as_itself_and_leaves_nothing_half_written(tmp_path, monkeypatch, fault):
    """The filters failing on the second score part right after its record write went to a thread (as filters
    with min above max did), a view failing on that part (the first part's files written), or saving the
    DatasetDicts failing after every Parquet file is written."""
    from sgpo_data.export.views import TrlView
    from sgpo_data.stages import publish as export_stage

    run = scored_run(tmp_path / "run", 6)
    overrides = ["export.formats=[parquet, hf]", "export.test_size=0.34"]
    calls = []

    def fail_third_call(method, message):
        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:  # filters: the test split's choice, then parts 1 and 2; trl: part 2's train split
                raise SgpoError(message)
            return method(*args, **kwargs)
        return failing

    if fault == "filters":
        monkeypatch.setattr(export_stage.Publisher, "_filter",
                            fail_third_call(export_stage.Publisher._filter, "injected filter failure"))
    elif fault == "view":
        monkeypatch.setattr(TrlView, "build", fail_third_call(TrlView.build, "injected view failure"))
    else:
        def failing(*args):
            raise SgpoError("injected save failure")

        monkeypatch.setattr(export_stage, "_save_hf", failing)
    with pytest.raises(SgpoError, match="injected"):
        export(run, overrides)
    assert leftovers(run) == [] and not (run / "export" / ".views.tmp").exists()
    monkeypatch.undo()
    stats = export(run, overrides)
    assert stats["rows_after_filters"] == 18 and leftovers(run) == []
    assert StageFiles(run, "export").read().num_rows == 18


def test_writes_to_one_file_before_a_flush_run_in_order(tmp_path):
    """Two writes to one file on two threads at once crash pyarrow; they run one after the other."""
    from datasets import load_from_disk

    from sgpo_data.stages.publish import _Writers

    writers = _Writers(tmp_path, ["parquet", "hf"], "fp")
    table = pa.table({"x": list(range(4000)), "y": [["a"]] * 4000})
    for start in range(0, 4000, 250):
        writers.write("v", "train", table.slice(start, 250))
    writers.close()
    assert pq.read_table(tmp_path / "v" / "train-00000-of-00001.parquet")["x"].to_pylist() == list(range(4000))
    assert load_from_disk(str(tmp_path / "hf" / "v"))["train"]["x"] == list(range(4000))
