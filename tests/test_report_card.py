import re
from pathlib import Path

import pytest
import yaml

from sgpo_data.card import card_metadata, render_card, size_category
from sgpo_data.config import Recipe
from sgpo_data.errors import SgpoError
from sgpo_data.report import PLOTS, check_no_secrets, make_plots, read_manifests, read_scored, write_report
from sgpo_data.run_reader import StageFiles
from tests.helpers import make_run

PNG = b"\x89PNG\r\n\x1a\n"
VIEWS = {"flat": ["train", "test"], "stepwise": ["train"]}


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


@pytest.fixture
def demo(pipeline_run) -> Path:
    """A real run of the shipped model through every stage (built once per session by conftest)."""
    return pipeline_run


def stats_rows(text: str) -> dict[str, str]:
    """The `| `key` | value | meaning |` rows of the Markdown statistics table (up to the blank line after it)."""
    table = text.split("| statistic | value | meaning |\n")[1].split("\n\n")[0]
    return dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", table, re.MULTILINE))


def assert_stats_match(text: str, stats: dict) -> None:
    shown = stats_rows(text)
    scalars = {k: v for k, v in stats.items() if not isinstance(v, (dict, list))}
    assert set(shown) == set(scalars)
    for key, value in scalars.items():
        if value is None:
            assert shown[key] == "n/a", key
        elif isinstance(value, float):
            assert float(shown[key]) == pytest.approx(value, abs=5e-5 + 1e-12)  # shown to 4 decimals, key
        else:
            assert shown[key] == str(value), key


# -- report ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["synthetic", pytest.param("demo", marks=pytest.mark.slow)])
def test_plots_are_real_pngs(which, request, tmp_path):
    folder = request.getfixturevalue("run" if which == "synthetic" else "demo")
    stats = read_manifests(folder)["score"]["statistics"]
    paths = make_plots(read_scored(folder), stats, tmp_path / "plots")
    assert set(paths) == set(PLOTS)
    for stem, path in paths.items():
        assert path == tmp_path / "plots" / f"{stem}.png"
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 2000


@pytest.mark.parametrize("which", ["synthetic", pytest.param("demo", marks=pytest.mark.slow)])
def test_report_embeds_every_plot_and_the_manifest_statistics(which, request, tmp_path):
    folder = request.getfixturevalue("run" if which == "synthetic" else "demo")
    path = write_report(folder, tmp_path / "report")
    text = path.read_text()
    assert path == tmp_path / "report" / "report.md"
    for stem in PLOTS:
        assert f"]({stem}.png)" in text and (path.parent / f"{stem}.png").read_bytes()[:8] == PNG
    stats = StageFiles(folder, "score").manifest()["statistics"]
    assert_stats_match(text, stats)
    for source, s in stats["by_source"].items():
        assert re.search(rf"^\| {source} \| {s['prompts']} \| {s['responses']} \|", text, re.MULTILINE)


def test_report_defaults_to_run_report_and_names_models_and_reward_map(run):
    path = write_report(run)
    text = path.read_text()
    assert path == run / "report" / "report.md"
    assert "| policy model | tiny-policy |" in text and "| judge model | tiny-judge |" in text
    assert "| reward map | sigmoid: r = sigmoid(5.0 * (rts - 0.5)) |" in text
    assert "num_samples=4" in text and "segmenter=paragraph" in text
    stats = StageFiles(run, "score").manifest()["statistics"]
    assert stats["judge_parse_errors"] == 1 and stats["judge_errors"] == 1 and stats["no_error_found"] == 1


def test_incomplete_run_says_what_to_run(tmp_path):
    partial = make_run(tmp_path / "partial", finish_score=False)
    for call in (lambda: write_report(partial), lambda: render_card(partial, VIEWS, None)):
        with pytest.raises(SgpoError, match=r"incomplete.*; run `sgpo-data score --out"):
            call()
    with pytest.raises(SgpoError, match="sgpo-data generate"):
        write_report(tmp_path / "nothing-here")


# -- card -----------------------------------------------------------------------------------------------

def test_card_front_matter_is_hub_metadata(run):
    text = render_card(run, VIEWS, None, repo_id="someone/sgpo-tiny", license="mit")
    meta = card_metadata(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "mit" and meta["pretty_name"] == "sgpo-tiny"
    assert meta["task_categories"] == ["reinforcement-learning", "text-generation"]
    assert meta["tags"] == ["sgpo", "grpo", "reasoning", "math", "process-supervision"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["language"] == ["en"]
    assert meta["configs"] == [
        {"config_name": "flat", "data_files": [{"split": "train", "path": "flat/train-*.parquet"},
                                               {"split": "test", "path": "flat/test-*.parquet"}], "default": True},
        {"config_name": "stepwise", "data_files": [{"split": "train", "path": "stepwise/train-*.parquet"}]},
    ]
    assert "\n# someone/sgpo-tiny\n" in text
    assert 'load_dataset("someone/sgpo-tiny")  # the default config, `flat`' in text
    assert 'stepwise = load_dataset("someone/sgpo-tiny", "stepwise")' in text
    from huggingface_hub import DatasetCard, DatasetCardData

    card = DatasetCard(text)
    assert isinstance(card.data, DatasetCardData)
    assert card.data.to_dict()["configs"] == meta["configs"]
    assert card.data.pretty_name == "sgpo-tiny" and card.data.language == ["en"] and card.data.license == "mit"
    assert DatasetCardData(**card.data.to_dict()).to_dict() == card.data.to_dict()


def test_size_category_uses_the_hub_buckets(run):
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 100_000, 10**12)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "n>1T"]
    assert card_metadata(render_card(run, VIEWS, None, num_rows=25_000))["size_categories"] == ["10K<n<100K"]


@pytest.mark.parametrize("which", ["synthetic", pytest.param("demo", marks=pytest.mark.slow)])
def test_card_statistics_equal_the_manifest(which, request):
    folder = request.getfixturevalue("run" if which == "synthetic" else "demo")
    manifests = read_manifests(folder)
    text = render_card(folder, VIEWS, {stem: f"plots/{stem}.png" for stem in PLOTS})
    stats = manifests["score"]["statistics"]
    assert_stats_match(text, stats)
    assert f"**{stats['zero_std_groups_grpo'] * 100:.1f}%** of the groups have zero reward std under GRPO" in text
    assert f"**{stats['zero_std_groups_sgpo'] * 100:.1f}%** under SGPO" in text
    for stem in PLOTS:
        assert f"](plots/{stem}.png)" in text
    for stage in ("generate", "judge", "score"):  # each stage's config, dumped as YAML, parses back
        block = text.split(f"**{stage}**\n\n```yaml\n")[1].split("\n```")[0]
        assert yaml.safe_load(block) == manifests[stage]["config"]
    assert "## Limitations" in text and "close to noise" in text


def test_card_without_plots_or_views(run):
    text = render_card(run, {"trl": ["train"]}, None)
    assert "## Plots" not in text and "![" not in text
    assert 'load_dataset("path/to/export")  # this folder; the default config, `trl`' in text
    assert card_metadata(text)["configs"][0]["default"] is True
    with pytest.raises(SgpoError, match="at least one exported view"):
        render_card(run, {}, None)
    with pytest.raises(SgpoError, match="at least one split"):
        render_card(run, {"flat": []}, None)


@pytest.mark.parametrize("prefix", ["hf_", "sk-"])
def test_token_in_a_manifest_never_reaches_the_card(prefix, tmp_path):
    token = prefix + "Ab3" * 12  # built at run time; not a real token
    config = Recipe().model_dump()
    config["generate"]["system_prompt"] = f"use {token} to log in"
    leaky = make_run(tmp_path / "leaky", {k: config[k] for k in ("data", "generate", "grader")})
    with pytest.raises(SgpoError, match="looks like a secret") as caught:
        render_card(leaky, VIEWS, None)
    assert token not in str(caught.value)
    assert token not in write_report(leaky, tmp_path / "report").read_text()  # the report omits prompts
    config["data"]["subset"] = token  # ... but shows the data settings
    leaky = make_run(tmp_path / "leakier", {k: config[k] for k in ("data", "generate", "grader")})
    with pytest.raises(SgpoError, match="looks like a secret"):
        write_report(leaky, tmp_path / "report2")
    assert not (tmp_path / "report2" / "report.md").exists()


def test_secret_guard_ignores_ordinary_words():
    check_no_secrets("task-decomposition-for-arithmetic-problems and use_hf_tokenizer_with_long_name", "x")
    with pytest.raises(SgpoError):
        check_no_secrets("token: hf_" + "x" * 20, "x")
