"""End to end on the real shipped model: a few prompts, short outputs, every stage, the CLI, and resume
after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgpo_data.config import load_recipe
from sgpo_data.schema import CONTRACT_COLUMNS, JudgeStatus
from sgpo_data.run_reader import StageFiles
from sgpo_data.stages import run_all
from sgpo_data.run_reader import read_stage
from tests.helpers import tiny_overrides, without_timing

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "demo.yaml"
CLI = [sys.executable, "-m", "sgpo_data_cli"]


def test_export_has_every_contract_column_and_the_sgpo_invariants(pipeline_run):
    table = read_stage(pipeline_run, "export")
    assert table.column_names == CONTRACT_COLUMNS
    rows = table.to_pylist()
    assert len(rows) == 16
    for row in rows:
        assert "".join(row["steps"]) == row["response"]
        if row["is_correct"]:
            assert row["reward"] == 1.0 and row["judge_status"] == JudgeStatus.SKIPPED_CORRECT
        else:
            assert row["reward"] < 1.0
            if row["judge_status"] == JudgeStatus.OK:
                assert 0.0 < row["reward"] < 1.0
                assert -1 <= row["first_error_step"] < len(row["steps"])
                assert row["judge_raw"] == str(row["first_error_step"])
        assert row["reward_outcome"] == (1.0 if row["is_correct"] else 0.0)
        assert len(row["response_logprobs"]) == row["response_tokens"]
    by_group: dict[str, list[dict]] = {}
    for row in rows:
        by_group.setdefault(row["prompt_id"], []).append(row)
    assert sorted(len(g) for g in by_group.values()) == [4, 4, 4, 4]
    all_negative = 0
    for group in by_group.values():
        assert abs(sum(r["advantage"] for r in group)) < 1e-4
        assert abs(sum(r["advantage_grpo"] for r in group)) < 1e-4
        assert {r["group_all_negative"] for r in group} == {not any(r["is_correct"] for r in group)}
        if group[0]["group_all_negative"]:
            all_negative += 1
            assert all(r["advantage_grpo"] == 0.0 for r in group)
            if len({r["rts"] for r in group}) > 1:  # distinct first-error positions: SGPO has a gradient
                assert any(r["advantage"] != 0.0 for r in group)
    assert all_negative >= 1, "the tiny model should leave at least one all-negative group"


def test_manifests_and_hf_export(pipeline_run):
    from datasets import load_from_disk

    for name in ("generate", "judge", "score", "export"):
        manifest = StageFiles(pipeline_run, name).manifest()
        assert manifest["status"] == "complete"
        assert manifest["sgpo_data_version"] and manifest["input_fingerprint"] and manifest["config"]
    stats = StageFiles(pipeline_run, "export").manifest()["statistics"]
    assert stats["responses"] == 16 and stats["prompts"] == 4
    dataset = load_from_disk(str(pipeline_run / "export" / "hf" / "flat"))
    assert dataset["train"].num_rows == 16
    assert dataset["train"].column_names == CONTRACT_COLUMNS


def test_rerun_skips_finished_work(pipeline_run):
    before = {p: p.stat().st_mtime_ns for p in pipeline_run.rglob("part-*.parquet")}
    recipe = load_recipe(DEMO, tiny_overrides(num_problems=4, num_samples=4, max_new_tokens=64))
    run_all(recipe, pipeline_run)
    assert {p: p.stat().st_mtime_ns for p in pipeline_run.rglob("part-*.parquet")} == before


def _cli(*args, **kwargs):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, **kwargs)


def _overrides():
    return [x for o in tiny_overrides(num_problems=3, num_samples=2, max_new_tokens=32) for x in ("--set", o)]


def test_kill_9_and_rerun_gives_the_same_rows(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _cli("run", str(DEMO), "--out", str(reference), *_overrides()).returncode == 0

    proc = subprocess.Popen([*CLI, "run", str(DEMO), "--out", str(killed), *_overrides()], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "generate" / "part-00000.done").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (killed / "generate" / "part-00000.done").exists()
    assert not (killed / "export").exists()

    result = _cli("run", str(DEMO), "--out", str(killed), *_overrides())
    assert result.returncode == 0, result.stderr
    a = read_stage(reference, "export").to_pylist()
    b = read_stage(killed, "export").to_pylist()
    assert without_timing(a) == without_timing(b)


def test_cli_generate_then_stage_commands_print_a_summary(tmp_path):
    out = str(tmp_path / "run")
    first = _cli("generate", "--recipe", str(DEMO), "--out", out, *_overrides())
    assert first.returncode == 0, first.stderr
    assert "accuracy" in first.stderr and "wall time" in first.stderr
    early = _cli("score", "--recipe", str(DEMO), "--out", out, *_overrides())
    assert early.returncode == 2
    assert f"{out}/judge is missing or incomplete; run `sgpo-data judge --out {out}` first" in early.stderr
    for stage in ("judge", "score", "export"):
        result = _cli(stage, "--recipe", str(DEMO), "--out", out, *_overrides())
        assert result.returncode == 0, result.stderr
    assert "zero-std groups, SGPO" in result.stderr and "judge parse failures" in result.stderr
    changed = _cli("generate", "--recipe", str(DEMO), "--out", out, *_overrides(), "--set", "generate.sampling.seed=5")
    assert changed.returncode == 2 and "pass --overwrite" in changed.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "data.source=/no/such/file.jsonl"], "data file /no/such/file.jsonl not found"),
        (["--set", "generate.backend=nope"], "generate.backend.name: unknown backend 'nope'"),
        (["--set", "judge.beta=3"], "invalid recipe key 'judge.beta'"),
    ],
)
def test_bad_input_is_one_error_line_and_no_stage_output(tmp_path, args, message):
    out = tmp_path / "run"
    result = _cli("run", str(DEMO), "--out", str(out), *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not list(out.rglob("*.done"))


def test_missing_column_names_the_file_and_fix(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n')
    result = _cli("generate", "--out", str(tmp_path / "run"), "--set", f"data.source={data}")
    assert result.returncode == 2
    assert str(data) in result.stderr and "problem" in result.stderr and "data.columns" in result.stderr


def test_a_cascade_asks_the_llm_only_where_arithmetic_found_nothing(tmp_path, monkeypatch):
    """arith then the LLM judge, on the real model: rows with a false equation are decided by arith (no request),
    the rest by the LLM; the manifest counts the errors each judge found and the requests actually sent."""
    import sgpo_data.judges.llm_judge as llm_judge
    from sgpo_data.run_reader import read_stage

    recipe = load_recipe(DEMO, tiny_overrides(num_problems=4, num_samples=3, max_new_tokens=64)
                         + ["judge.name=cascade", "judge.options={}"])
    asked = []
    original = llm_judge.LLMJudge.request
    monkeypatch.setattr(llm_judge.LLMJudge, "request", lambda self, item: asked.append(item) or original(self, item))
    run_all(recipe, tmp_path)
    rows = [r for r in read_stage(tmp_path, "judge").to_pylist() if r["judge_status"] == "ok"]
    by_arith = [r for r in rows if r["judge_model"] == "arith"]
    by_llm = [r for r in rows if r["judge_model"] != "arith"]
    assert len(asked) == len(by_llm) and rows
    assert all(r["first_error_step"] >= 0 and r["judge_prompt_tokens"] is None and r["judge_calls"] == 0
               for r in by_arith)
    assert all(r["judge_prompt_tokens"] > 0 and r["judge_calls"] == 1 and r["judge_seconds"] > 0 for r in by_llm)
    stats = json.loads((tmp_path / "judge" / "manifest.json").read_text())["statistics"]
    assert stats["usage"]["requests"] == len(by_llm)
    found = sum(r["first_error_step"] >= 0 for r in by_llm)
    assert stats["errors_found_by"].get("arith", 0) == len(by_arith)
    assert sum(stats["errors_found_by"].values()) == len(by_arith) + found


def test_the_mc_judge_labels_wrong_responses_by_sampling_the_policy_from_step_prefixes(tmp_path, monkeypatch):
    """Math-Shepherd-style labels on the embedded arithmetic data with the real model: each wrong response is
    searched in at most ceil(log2 K) rounds of k continuations, each continuing the policy's own conversation
    from a step prefix; a rerun asks nothing."""
    import math

    import sgpo_data.backends.transformers_backend as tb
    from sgpo_data.run_reader import read_stage

    recipe = load_recipe(DEMO, tiny_overrides(num_problems=3, num_samples=2, max_new_tokens=64)
                         + ["judge.name=mc", "judge.options={samples: 2, max_new_tokens: 48}"])
    sent = []
    original = tb.TransformersBackend.generate_batch
    monkeypatch.setattr(tb.TransformersBackend, "generate_batch",
                        lambda self, requests: sent.extend(requests) or original(self, requests))
    run_all(recipe, tmp_path)
    rows = read_stage(tmp_path, "judge").to_pylist()
    judged = [r for r in rows if r["judge_status"] == "ok"]
    assert judged and all(r["judge_model"] for r in judged)
    for r in judged:
        k = len(r["steps"])
        assert 0 <= r["first_error_step"] < k and r["judge_calls"] <= math.ceil(math.log2(k))
        rates = json.loads(r["judge_raw"])["success_rate_by_step"]
        assert len(rates) == r["judge_calls"] and all(0 <= v <= 1 for v in rates.values())
    probes = [q for q in sent if q.conversation[-1]["role"] == "assistant"]
    assert len(probes) == sum(r["judge_calls"] for r in judged)
    assert all(q.conversation[0]["content"].endswith("finish with \"The answer is <number>.\"") for q in probes)
    stats = json.loads((tmp_path / "judge" / "manifest.json").read_text())["statistics"]
    assert stats["usage"]["requests"] == len(probes)
    sent.clear()
    for marker in tmp_path.glob("judge/*.done"):
        marker.unlink()  # every judge shard is redone: its verdicts come from the cache
    run_all(recipe, tmp_path)
    assert sent == [] and read_stage(tmp_path, "judge").to_pylist() == rows


def test_group_mode_asks_one_request_per_group_on_the_real_model(tmp_path):
    from sgpo_data.run_reader import read_stage

    recipe = load_recipe(DEMO, tiny_overrides(num_problems=2, num_samples=3, max_new_tokens=48)
                         + ["judge.name=llm", "judge.options={mode: group, max_new_tokens: 8}"])
    run_all(recipe, tmp_path)
    rows = [r for r in read_stage(tmp_path, "judge").to_pylist() if r["judge_status"] in ("ok", "parse_error")]
    groups = {r["prompt_id"] for r in rows}
    stats = json.loads((tmp_path / "judge" / "manifest.json").read_text())["statistics"]
    assert rows and stats["usage"]["requests"] == len(groups)
    for group in groups:
        members = [r for r in rows if r["prompt_id"] == group]
        assert len({r["judge_raw"] for r in members}) == 1  # one reply judged them all
        assert sum(r["judge_prompt_tokens"] for r in members) > 0
    assert stats["usage"]["prompt_tokens"] == sum(r["judge_prompt_tokens"] for r in rows)
