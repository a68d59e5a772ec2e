"""Stage commands run one at a time, as a user runs them, against OpenAI-compatible fault servers on loopback: a
stage carries its upstream's failed rows into its exit code (and a push refuses them), and every reader refuses a
stage made from an upstream that was redone since."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sgpo_data_cli.app import app
from tests.fault_server import Fault
from tests.helpers import G, PROMPTS, cli_args, first_problem

pytestmark = pytest.mark.slow  # the grader's math-verify worker is a process of its own


def stage(out, policy, judge, name: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, cli_args(out, policy, judge, *extra, stages=(name,)), catch_exceptions=False)
    return result.exit_code, result.output


def test_each_stage_command_exits_3_while_upstream_rows_are_in_error_and_a_push_waits(servers, tmp_path,
                                                                                   monkeypatch):
    import sgpo_data.export.hub as hub

    policy, judge = servers
    policy.faults.append(Fault("status", status=400, match=first_problem()))  # one prompt always refused
    code, output = stage(tmp_path, policy, judge, "generate")
    assert code == 3, output
    for name in ("judge", "score", "export"):
        code, output = stage(tmp_path, policy, judge, name)
        assert code == 3, (name, output)  # not 0: the dataset lacks the failed prompt's rows
        assert f"{G} row(s) failed (generate: bad_request {G})" in output
    pushed = []
    monkeypatch.setattr(hub, "push_to_hub", lambda folder, repo, **kwargs: pushed.append(repo) or "url")
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    code, output = stage(tmp_path, policy, judge, "export", "--push-to-hub", "org/name")
    assert code == 3 and pushed == [] and "not pushed to org/name" in output, output
    code, output = stage(tmp_path, policy, judge, "export", "--push-to-hub", "org/name", "--push-with-failed-rows")
    assert code == 3 and pushed == ["org/name"], output
    policy.faults.clear()
    for name in ("generate", "judge", "score", "export"):  # the failed prompt retried: every stage is clean again
        code, output = stage(tmp_path, policy, judge, name)
        assert code == 0, (name, output)


def test_readers_refuse_a_run_whose_generate_was_redone_until_the_stages_after_it_are(servers, tmp_path,
                                                                                      monkeypatch):
    import sgpo_data.backends.models as models

    policy, judge = servers
    result = CliRunner().invoke(app, cli_args(tmp_path, policy, judge), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    code, output = stage(tmp_path, policy, judge, "generate", "--overwrite", "--set", "generate.sampling.seed=7")
    assert code == 0, output

    def refused(*args: str) -> str:
        result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 2, result.output
        assert "out of date: generate was redone" in result.output
        assert "rerun `sgpo-data judge --out" in result.output and "--overwrite`" in result.output  # another seed
        return result.output

    refused("report", tmp_path)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("train loaded a model for stale data"))
    refused("train", "--data", tmp_path, "--out", tmp_path.parent / f"{tmp_path.name}-train")
    code, output = stage(tmp_path, policy, judge, "score")
    assert code == 2 and "judge is out of date" in output, output
    result = CliRunner().invoke(app, cli_args(tmp_path, policy, judge, "--set", "generate.sampling.seed=7",
                                              "--overwrite"), catch_exceptions=False)
    assert result.exit_code == 0, result.output  # judge, score and export redone from the new rollouts
    result = CliRunner().invoke(app, ["report", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from sgpo_data.run_reader import read_stage

    generated, exported = read_stage(tmp_path, "generate"), read_stage(tmp_path, "export")
    assert exported.num_rows == PROMPTS * G
    assert exported["response"].to_pylist() == generated["response"].to_pylist()  # the new rollouts, not the old
