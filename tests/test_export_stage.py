"""The export stage on a real pipeline run: views on disk, splits by prompt, the card, and publishing up to
the `huggingface_hub.HfApi` boundary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from sgpo_data.card import card_metadata
from sgpo_data.config import load_recipe
from sgpo_data.errors import SgpoError
from sgpo_data.export.hub import push_to_hub
from sgpo_data.run_reader import StageFiles
from sgpo_data.stages import run_all
from tests.helpers import tiny_overrides

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
VIEWS = ["flat", "grouped", "prompts", "trl", "verl", "stepwise"]


@pytest.fixture(scope="module")
def exported(pipeline_run, tmp_path_factory):
    """The shared pipeline run re-exported with a test split and a filter (earlier stages are reused)."""
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(pipeline_run, run)
    overrides = tiny_overrides(num_problems=4, num_samples=4, max_new_tokens=64)
    run_all(load_recipe(DEMO, overrides + ["export.test_size=0.25", "export.dedupe_within_group=true"]), run,
            overwrite=True)
    return run


def test_every_view_loads_with_datasets_and_splits_never_share_a_prompt(exported):
    from datasets import load_dataset, load_from_disk

    stats = StageFiles(exported, "export").manifest()["statistics"]["export"]
    assert stats["splits"]["train"] + stats["splits"]["test"] == stats["rows_after_filters"]
    assert 16 - stats["rows_after_filters"] == sum(stats["filters"].values())
    for view in VIEWS:
        for split in ("train", "test"):
            files = str(exported / "export" / view / f"{split}-00000-of-00001.parquet")
            loaded = load_dataset("parquet", data_files=files, split="train")
            assert loaded.num_rows == stats["views"][view][split]
        assert set(load_from_disk(str(exported / "export" / "hf" / view))) == {"train", "test"}
    train = set(pq.read_table(exported / "export" / "flat" / "train-00000-of-00001.parquet")["prompt_id"].to_pylist())
    test = set(pq.read_table(exported / "export" / "flat" / "test-00000-of-00001.parquet")["prompt_id"].to_pylist())
    assert len(test) == 1 and len(train) == 3 and not train & test


def test_trl_and_verl_views_carry_the_prompt_the_policy_saw(exported):
    trl = pq.read_table(exported / "export" / "trl" / "train-00000-of-00001.parquet").to_pylist()
    flat = {(r["prompt_id"], r["sample_idx"]): r for r in
            pq.read_table(exported / "export" / "flat" / "train-00000-of-00001.parquet").to_pylist()}
    for row in trl:
        source = flat[(row["prompt_id"], row["sample_idx"])]
        assert row["prompt"][-1]["role"] == "user" and source["problem"] in row["prompt"][-1]["content"]
        assert row["completion"] == [{"role": "assistant", "content": source["response"]}]
        assert row["advantage"] == source["advantage"]
    by_prompt = {r["prompt_id"]: r for r in flat.values()}
    verl = pq.read_table(exported / "export" / "verl" / "train-00000-of-00001.parquet").to_pylist()
    prompts = pq.read_table(exported / "export" / "prompts" / "train-00000-of-00001.parquet").to_pylist()
    assert [r["extra_info"]["prompt_id"] for r in verl] == [r["prompt_id"] for r in prompts]
    assert len(prompts) == len(by_prompt)  # one row per prompt
    for v, p in zip(verl, prompts):
        source = by_prompt[p["prompt_id"]]
        assert v["reward_model"] == {"style": "rule", "ground_truth": source["reference_answer"]} and v["ability"] == "math"
        assert v["extra_info"]["reference_solution"] == p["reference_solution"] == source["reference_solution"]
        assert p["solution"] == source["reference_answer"] and v["prompt"] == p["prompt"]
        assert p["prompt"][-1]["role"] == "user" and source["problem"] in p["prompt"][-1]["content"]


def test_stepwise_labels_agree_with_first_error_step(exported):
    stepwise = pq.read_table(exported / "export" / "stepwise" / "train-00000-of-00001.parquet").to_pylist()
    flat = {(r["prompt_id"], r["sample_idx"]): r for r in
            pq.read_table(exported / "export" / "flat" / "train-00000-of-00001.parquet").to_pylist()}
    assert stepwise
    for row in stepwise:
        source = flat[(row["prompt_id"], row["sample_idx"])]
        k = -1 if source["first_error_step"] is None else source["first_error_step"]  # None: a right answer, unjudged
        k = len(source["steps"]) - 1 if k == -1 and not source["is_correct"] else k
        expected = [True] * len(source["steps"]) if k == -1 else [i < k for i in range(len(source["steps"]))]
        assert row["labels"] == expected and len(row["completions"]) == len(source["steps"])
        seps = row["separators"]
        assert seps[0] + "".join(c + s for c, s in zip(row["completions"], seps[1:])) == "".join(source["steps"])
    kept = {(r["prompt_id"], r["sample_idx"]) for r in stepwise}
    assert all(key in kept for key, r in flat.items() if r["is_correct"] and r["steps"])  # right answers: all True


def test_the_export_folder_loads_by_default_config_and_by_view_name(exported, tmp_path):
    from datasets import load_dataset

    stats = StageFiles(exported, "export").manifest()["statistics"]["export"]
    folder = str(exported / "export")
    default = load_dataset(folder, cache_dir=str(tmp_path / "default"))
    assert {split: default[split].num_rows for split in default} == stats["views"]["flat"]
    for view in VIEWS:
        loaded = load_dataset(folder, view, cache_dir=str(tmp_path / view))
        assert {split: loaded[split].num_rows for split in loaded} == stats["views"][view]


def test_card_yaml_parses_and_its_statistics_equal_the_manifest(exported):
    card = (exported / "export" / "README.md").read_text()
    meta = card_metadata(card)
    assert meta["license"] == "apache-2.0" and "reinforcement-learning" in meta["task_categories"]
    assert [c["config_name"] for c in meta["configs"]] == VIEWS
    stats = StageFiles(exported, "score").manifest()["statistics"]
    assert f"| `all_negative_groups` | {stats['all_negative_groups']} |" in card
    assert f"| `responses` | {stats['responses']} |" in card
    for png in ("reward_distribution", "first_error_position", "zero_std_groups", "accuracy_by_source", "judge_status"):
        assert f"plots/{png}.png" in card and (exported / "export" / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    recipe = yaml.safe_load((exported / "export" / "recipe.yaml").read_text())
    load_recipe_from_tree = load_recipe(None, [])  # the uploaded recipe is a valid recipe
    assert set(recipe) <= set(load_recipe_from_tree.model_dump())


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi at the network boundary and records what would be sent."""

    def __init__(self):
        self.calls, self.files = [], {}

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, kwargs))
        for op in operations:
            self.files[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/abc"})()


def test_push_uploads_card_recipe_views_and_plots(exported, tmp_path, monkeypatch):
    from datasets import load_dataset

    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    api = RecordingHfApi()
    url = push_to_hub(exported / "export", "my-org/sgpo-demo", private=True, revision="v1",
                      commit_message="first upload", api=api)
    assert url.endswith("/commit/abc")
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "create_commit"]
    assert api.calls[0][2]["repo_type"] == "dataset" and api.calls[0][2]["private"] is True
    assert api.calls[2][2]["commit_message"] == "first upload" and api.calls[2][2]["revision"] == "v1"
    assert {"README.md", "recipe.yaml", "trl/train-00000-of-00001.parquet", "plots/judge_status.png"} <= set(api.files)
    assert not any(p.startswith(("hf/", "part-")) or p.endswith((".done", ".json")) for p in api.files)
    for path, payload in api.files.items():  # what would be uploaded loads back; no token leaks into it
        assert b"hf_xxxxxxxx" not in payload
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(payload)
    back = load_dataset("parquet", data_files=str(tmp_path / "stepwise" / "train-00000-of-00001.parquet"), split="train")
    assert back.column_names[:3] == ["prompt", "completions", "labels"] or {"prompt", "completions", "labels"} <= set(back.column_names)
    from huggingface_hub import DatasetCard

    card = DatasetCard((tmp_path / "README.md").read_text())  # the pushed card is the repo's, by its id
    assert card.data.pretty_name == "sgpo-demo" and card.data.language == ["en"]
    assert [c.get("default") for c in card.data.configs] == [True] + [None] * (len(VIEWS) - 1)
    assert "\n# my-org/sgpo-demo\n" in card.text and 'load_dataset("my-org/sgpo-demo")' in card.text
    assert 'load_dataset("my-org/sgpo-demo", "stepwise")' in card.text and "path/to/export" not in card.text


def test_push_refuses_before_uploading(exported, monkeypatch):
    api = RecordingHfApi()
    with pytest.raises(SgpoError, match="invalid Hub repo id"):
        push_to_hub(exported / "export", "bad repo id!", token="hf_" + "y" * 30, api=api)
    with pytest.raises(SgpoError, match="expected owner/name"):
        push_to_hub(exported / "export", "justaname", token="hf_" + "y" * 30, api=api)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(SgpoError, match="no Hugging Face token: set HF_TOKEN"):
        push_to_hub(exported / "export", "my-org/x", api=api)
    with pytest.raises(SgpoError, match="run `sgpo-data export` first"):
        push_to_hub(exported / "generate", "my-org/x", token="hf_" + "y" * 30, api=api)
    assert api.calls == []


def test_export_of_an_incomplete_run_says_what_to_run(tmp_path):
    from sgpo_data.stages import run_stage

    with pytest.raises(SgpoError, match="score is missing or incomplete; run `sgpo-data score"):
        run_stage("export", load_recipe(DEMO), tmp_path)


def test_report_command_writes_plots_and_summary(exported, tmp_path):
    from typer.testing import CliRunner

    from sgpo_data_cli.app import app

    result = CliRunner().invoke(app, ["report", str(exported), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report" / "report.md").read_text()
    assert "zero_std_groups.png" in report and (tmp_path / "report" / "zero_std_groups.png").is_file()


@pytest.mark.parametrize(("repo", "token_env", "message"), [
    ("not a repo!", "hf_" + "z" * 30, "invalid Hub repo id"),
    ("my-org/fine", None, "no Hugging Face token"),
])
def test_cli_push_errors_come_before_any_export(pipeline_run, tmp_path, monkeypatch, repo, token_env, message):
    from typer.testing import CliRunner

    from sgpo_data_cli.app import app

    run = tmp_path / "run"
    shutil.copytree(pipeline_run, run, ignore=shutil.ignore_patterns("export"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    if token_env:
        monkeypatch.setenv("HF_TOKEN", token_env)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    result = CliRunner().invoke(app, ["export", "--out", str(run), "--recipe", str(DEMO), "--push-to-hub", repo])
    assert result.exit_code == 2 and message in result.output
    assert not (run / "export").exists()
