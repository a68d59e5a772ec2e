"""The CLI's own checks, run through the real commands in this process, before any model loads or request is sent:
where --out may be, recipe keys that would make wrong data, a wrong --data for train, and help texts that say
what each option does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgpo_data_cli.app import app

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def one_line_error(code: int, output: str) -> str:
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def command_with_out(command: str, out: Path, tmp_path: Path) -> list:
    """The least each command needs besides --out; everything before --out is checked first and passes."""
    processbench = tmp_path / "pb.json"
    processbench.write_text('[{"id": "a", "problem": "1+1", "steps": ["2"], "label": -1, "final_answer_correct": true}]')
    return {
        "run": ["run", DEMO, "--out", out],
        "report": ["report", tmp_path / "some-run", "--out", out],
        "train": ["train", "--data", tmp_path / "missing", "--out", out],
        "simulate": ["simulate", "--iterations", "1", "--out", out],
        "eval-judge": ["eval-judge", "--data", processbench, "--judge", "arith", "--out", out],
        "experiment": ["experiment", "--quick", "--out", out],
    }.get(command, [command, "--recipe", DEMO, "--out", out])


COMMANDS = ["generate", "judge", "score", "export", "run", "report", "train", "simulate", "eval-judge", "experiment"]


def bad_outs(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a-file.txt"
    a_file.write_text("not a folder")
    outs = {"a file": a_file, "under a file": a_file / "run", "under /proc": Path("/proc/sgpo-data-test/run")}
    if shutil.which("chattr"):
        locked = tmp_path / "immutable"
        locked.mkdir()
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0:
            outs["immutable"] = locked
    return outs


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_that_cannot_be_written_is_one_line_for_every_command(command, tmp_path):
    try:
        for case, out in bad_outs(tmp_path).items():
            line = one_line_error(*invoke(*command_with_out(command, out, tmp_path)))
            assert "--out" in line and str(out) in line, (case, line)
    finally:
        if (tmp_path / "immutable").exists():
            subprocess.run(["chattr", "-i", str(tmp_path / "immutable")], capture_output=True)


@pytest.mark.parametrize("command", ["generate", "judge", "score", "export", "run"])
def test_a_run_folder_inside_another_run_is_refused(command, tmp_path):
    outer = tmp_path / "outer"
    (outer / "generate").mkdir(parents=True)
    (outer / "generate" / "manifest.json").write_text("{}")
    for inner in (outer / "inner", outer / "generate" / "inner", outer / "a" / "b"):
        line = one_line_error(*invoke(*command_with_out(command, inner, tmp_path)))
        assert f"is inside the run folder {outer}" in line
    assert not (outer / "inner").exists()


def test_outputs_beside_a_run_are_allowed_but_not_inside_its_stage_folders(tmp_path):
    from sgpo_data_cli.app import _check_out
    from sgpo_data.errors import SgpoError

    run = tmp_path / "run"
    (run / "generate").mkdir(parents=True)
    (run / "generate" / "manifest.json").write_text("{}")
    _check_out(run / "train", run_folder=False)  # checkpoints or a report next to the stages: fine
    for stage in ("generate", "judge", "score", "export", "cache"):
        with pytest.raises(SgpoError, match="inside the run folder"):
            _check_out(run / stage / "x", run_folder=False)
    _check_out(run)  # the run folder itself: resuming it is the point


def test_train_refuses_missing_data_before_loading_the_model(tmp_path, monkeypatch):
    import sgpo_data.backends.models as models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(models, "load_model", no_model)
    line = one_line_error(*invoke("train", "--data", tmp_path / "missing.parquet", "--out", tmp_path / "out"))
    assert "training data" in line and "not found" in line


def test_a_prompt_template_without_its_placeholder_is_refused_at_once(tmp_path):
    for template, message in [("no placeholder", "lacks {problem}"), ("'{problem} and {x}'", "unknown placeholder(s) {x}")]:
        line = one_line_error(*invoke("generate", "--recipe", DEMO, "--out", tmp_path / "run",
                                      "--set", f"generate.prompt_template={template}"))
        assert "generate.prompt_template" in line and message in line
    assert not (tmp_path / "run").exists()


def test_token_weighted_rts_with_a_served_policy_needs_a_tokenizer_up_front(tmp_path):
    line = one_line_error(*invoke("run", DEMO, "--out", tmp_path / "run", "--set", "score.rts=tokens",
                                  "--set", "generate.backend=openai", "--set", "generate.model=served-name",
                                  "--set", "generate.backend.options={base_url: 'http://127.0.0.1:9/v1'}"))
    assert "score.tokenizer" in line
    assert not (tmp_path / "run").exists()  # refused before generate made anything


@pytest.mark.parametrize("key, value", [("export.formats", "[]"), ("export.views", "[]")])
def test_an_export_with_nothing_to_write_is_refused_before_any_stage(key, value, tmp_path):
    line = one_line_error(*invoke("run", DEMO, "--out", tmp_path / "run", "--set", f"{key}={value}"))
    assert key in line


@pytest.mark.parametrize("args, names", [
    (["--set", "rl.bogus=1"], ["rl.bogus"]),
    (["--set", "settings.main.arms=[grpo,noisy_2]"], ["settings.main.arms", "noisy_2", "[0, 1]"]),
    (["--set", "settings.main.arms=[grpo,best]"], ["unknown arm 'best'"]),
    (["--preset", "tpu"], ["unknown preset 'tpu'"]),
    (["--set", "rl.lr"], ["--set 'rl.lr'", "dotted.key=value"]),
])
def test_experiment_refuses_a_bad_key_before_writing_anything(args, names, tmp_path):
    line = one_line_error(*invoke("experiment", *args, "--out", tmp_path / "exp"))
    assert all(name in line for name in names), line
    assert not (tmp_path / "exp").exists()


def test_help_texts_say_what_each_option_does():
    import re

    def help_of(command: str) -> str:
        code, output = invoke(command, "--help")
        assert code == 0
        return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", output))

    out_help = {"train": "folder for checkpoints", "simulate": "folder for dynamics.csv"}
    for command, text in out_help.items():  # neither writes a run folder
        assert f"--out -o <path> {text}" in help_of(command)
    export = help_of("export")
    assert "each stage" not in export and "of the stage" in export
    assert "--view" in export and "--format" not in export  # views are views; export.formats are file formats
    assert "of each stage" in help_of("run")
    from sgpo_data.judges import JUDGES

    judge_help = help_of("eval-judge")
    assert all(name in judge_help for name in JUDGES.names())


def test_a_server_url_without_a_scheme_is_refused_when_the_recipe_loads(tmp_path):
    """Not three retries and an exit 4 ("unsupported protocol") at the first request."""
    line = one_line_error(*invoke("generate", "--recipe", DEMO, "--out", tmp_path / "run",
                                  "--set", "generate.backend=openai", "--set", "generate.model=m",
                                  "--set", "generate.backend.options={base_url: 'localhost:8000/v1'}"))
    assert "generate.backend.options.base_url" in line and "not an http(s) URL" in line
