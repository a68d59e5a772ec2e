"""`sgpo-data eval-judge` writes its predictions as it goes and resumes: an LLM judge on the openai backend against
the fault server (tests/fault_server.py) is stopped part-way (a service that fails, a Ctrl-C, a torn last line), and
a rerun asks only for the items not yet judged and ends with the metrics of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sgpo_data_cli.app import app
from tests.fault_server import Fault, FaultServer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = ["--subset", "gsm8k", "--subset", "math", "--limit", "6", "--seed", "1"]  # 12 items, erroneous and correct
ITEMS = 12


def llm_args(data: Path, out: Path, server: FaultServer, *extra: str) -> list[str]:
    return ["eval-judge", "--data", str(data), *SAMPLE, "--judge", "llm", "--out", str(out),
            "--set", "backend=openai", "--set", "model=fake", "--set", "max_in_flight=2",
            "--set", f"backend.options={{base_url: '{server.base_url}', max_retries: 1, timeout_s: 2}}", *extra]


def eval_llm(data: Path, out: Path, server: FaultServer, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, llm_args(data, out, server, *extra))
    return result.exit_code, result.output


def predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def figures(out: Path) -> dict:
    """metrics.json without the measured times, which two runs need not share."""
    found = json.loads((out / "metrics.json").read_text())
    subsets = {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in found["subsets"].items()}
    total = {k: v for k, v in found["total"].items() if k != "seconds"}
    return {"mean_f1": found["mean_f1"], "subsets": subsets, "total": total}


def asked_once(server: FaultServer) -> None:
    repeated = [key for key, n in server.successes().items() if n > 1]
    assert not repeated, f"{len(repeated)} judge request(s) that had been answered were sent again"


@pytest.fixture
def uninterrupted(shared_data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("whole")
    with FaultServer() as server:
        code, output = eval_llm(shared_data / "processbench", out, server)
    assert code == 0, output
    assert len(server.log) == ITEMS
    return figures(out)


def test_an_evaluation_stopped_by_a_failing_service_resumes_without_asking_again(shared_data, tmp_path,
                                                                                   uninterrupted):
    out = tmp_path / "out"
    with FaultServer() as server:
        server.faults.append(Fault("drop", after=5))  # an outage that starts after five answers
        code, output = eval_llm(shared_data / "processbench", out, server)
        assert code == 4, output
        assert [line for line in output.splitlines() if line.startswith("error:")][0].count("cannot reach") == 1
        done = predictions(out)
        assert len(done) == 5 and not (out / "metrics.json").exists()
        assert all(p["status"] == "ok" and p["calls"] == 1 for p in done)
        server.faults.clear()
        code, output = eval_llm(shared_data / "processbench", out, server)
        assert code == 0, output
        asked_once(server)
        assert sum(server.successes().values()) == ITEMS
    final = predictions(out)
    assert len(final) == ITEMS and len({(p["subset"], p["index"]) for p in final}) == ITEMS
    assert figures(out) == uninterrupted


def test_a_finished_evaluation_rerun_asks_nothing_and_keeps_its_figures(shared_data, tmp_path, uninterrupted):
    with FaultServer() as server:
        assert eval_llm(shared_data / "processbench", tmp_path, server)[0] == 0
        first = (tmp_path / "predictions.jsonl").read_text()
        code, output = eval_llm(shared_data / "processbench", tmp_path, server)
        assert code == 0, output
        assert len(server.log) == ITEMS
    assert (tmp_path / "predictions.jsonl").read_text() == first
    assert figures(tmp_path) == uninterrupted


def test_a_torn_last_line_is_ignored_and_its_item_judged_again(shared_data, tmp_path, uninterrupted):
    with FaultServer() as server:
        assert eval_llm(shared_data / "processbench", tmp_path, server)[0] == 0
        lines = (tmp_path / "predictions.jsonl").read_text().splitlines(keepends=True)
        kept = lines[:4]
        (tmp_path / "predictions.jsonl").write_text("".join(kept) + lines[4][:25])  # a crash mid-write
        (tmp_path / "metrics.json").unlink()
        code, output = eval_llm(shared_data / "processbench", tmp_path, server)
        assert code == 0, output
        assert len(server.log) == 2 * ITEMS - len(kept)  # only the items not on a complete line were asked
    assert figures(tmp_path) == uninterrupted
    assert len(predictions(tmp_path)) == ITEMS


def test_a_broken_line_before_the_last_is_refused_with_its_number(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"id": f"x-{i}", "problem": "p", "steps": ["1 + 1 = 2"], "label": -1}) + "\n"
                            for i in range(3)))
    args = ["eval-judge", "--data", str(data), "--judge", "arith", "--out", str(tmp_path / "out")]
    assert CliRunner().invoke(app, args).exit_code == 0
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "out" / "predictions.jsonl").write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "predictions.jsonl: line 2 is not a prediction" in result.output


def test_another_judge_config_or_sample_in_the_same_out_is_refused_unless_overwrite(shared_data, tmp_path):
    with FaultServer() as server:
        assert eval_llm(shared_data / "processbench", tmp_path, server)[0] == 0
        before = (tmp_path / "predictions.jsonl").read_text()
        for extra in (["--set", "options.constrained=false"], ["--seed", "2"]):
            code, output = eval_llm(shared_data / "processbench", tmp_path, server, *extra)
            assert code == 2, output
            [line] = [line for line in output.splitlines() if line.strip()]
            assert line.startswith("error:") and "--overwrite" in line
        assert len(server.log) == ITEMS and (tmp_path / "predictions.jsonl").read_text() == before
        code, output = eval_llm(shared_data / "processbench", tmp_path, server, "--seed", "2", "--overwrite")
        assert code == 0, output
    found = json.loads((tmp_path / "metrics.json").read_text())
    assert found["sample"] == {"limit": 6, "seed": 2} and len(predictions(tmp_path)) == ITEMS


def test_out_problems_are_one_line_errors_before_anything_is_judged(shared_data, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    blocked = tmp_path / "blocked"
    (blocked / "predictions.jsonl").mkdir(parents=True)  # where the predictions go, a folder
    cases = {a_file: "is a file, not a folder", a_file / "sub": "is a file, not a folder",
             blocked: "predictions.jsonl"}
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases[locked] = "you can write to"
    with FaultServer() as server:
        for out, message in cases.items():
            code, output = eval_llm(shared_data / "processbench", out, server)
            assert code == 2, output
            [line] = [line for line in output.splitlines() if line.strip()]
            assert line.startswith("error:") and message in line, line
        assert server.log == []


@pytest.mark.slow  # the CLI in a process of its own, so that a real signal reaches it
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_leaves_whole_lines_and_a_rerun_resumes(signum, shared_data, tmp_path, uninterrupted):
    out = tmp_path / "out"
    with FaultServer() as server:
        server.faults.append(Fault("slow", delay_s=30, after=4))  # four answers, then the judge hangs
        command = [sys.executable, "-c", "from sgpo_data_cli.app import main; main()",
                   *llm_args(shared_data / "processbench", out, server)[:-2],
                   "--set", f"backend.options={{base_url: '{server.base_url}', max_retries: 1, timeout_s: 60}}"]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        path = out / "predictions.jsonl"
        while not (path.exists() and path.read_text().count("\n") == 4):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0]
            time.sleep(0.05)
        process.send_signal(signum)
        output = process.communicate(timeout=30)[0]
        assert process.returncode == 128 + signum, output  # as a shell reports a command the signal stopped
        assert f"interrupted by {signum.name}" in output and "rerun the same command to resume" in output
        assert len(predictions(out)) == 4 and not (out / "metrics.json").exists()
        server.faults.clear()
        code, output = eval_llm(shared_data / "processbench", out, server)
        assert code == 0, output
        asked_once(server)
    assert figures(out) == uninterrupted
