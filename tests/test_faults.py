"""The pipeline against OpenAI-compatible servers that fail: a fault server (tests/fault_server.py) for the
policy and another for the judge, each injecting one fault at a time. For every case: the exit code, the row
counts and statuses; then a rerun against healthy servers, after which every row is ok, there are no duplicate
rows, and no call that had succeeded was sent again."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from sgpo_data.run_reader import StageFiles
from tests.fault_server import Fault
from tests.helpers import G, PROMPTS, assert_healthy_rerun_completes, first_problem, rows, run_cli

pytestmark = pytest.mark.slow  # the grader's math-verify worker is a process of its own

PROBLEM = "Solve the problem step by step"  # in every policy prompt


# -- request faults: only the failing request's rows are marked, the stage goes on, exit 3 ------------------------

ROW_FAULTS = {
    "persistent 400": (Fault("status", status=400), "bad_request"),
    "persistent 500": (Fault("status", status=500), "server_error"),
    "truncated body": (Fault("truncated"), "invalid_response"),
    "html body": (Fault("html"), "invalid_response"),
    "slower than the timeout": (Fault("slow", delay_s=4.0), "timeout"),
}


@pytest.mark.parametrize("case", list(ROW_FAULTS))
def test_a_failing_policy_request_marks_only_its_prompt(case, servers, tmp_path):
    policy, judge = servers
    fault, kind = ROW_FAULTS[case]
    first = fault.match = first_problem()  # every request for the first prompt, on every attempt
    policy.faults.append(fault)
    code, output = run_cli(tmp_path, policy, judge)
    assert code == 3, output
    assert "row(s) failed (generate: " + kind in output and "Rerun the same command" in output
    generated = rows(tmp_path, "generate")
    assert len(generated) == PROMPTS * G
    failed = [r for r in generated if r["generate_status"] == "error"]
    assert len(failed) == G and {r["problem"] for r in failed} == {first}
    assert {r["generate_error_kind"] for r in failed} == {kind} and all(r["generate_error"] for r in failed)
    assert all(r["response"] is None for r in failed)
    assert f"prompt_id={failed[0]['prompt_id']}" in output
    judged = rows(tmp_path, "judge")
    assert {r["judge_status"] for r in judged if r["generate_status"] == "error"} == {"skipped_no_response"}
    exported = pq.read_table(tmp_path / "export" / "flat" / "train-00000-of-00001.parquet")
    assert exported.num_rows == (PROMPTS - 1) * G  # rows in error are left out of the views
    assert StageFiles(tmp_path, "export").manifest()["statistics"]["export"]["rows_in_error_left_out"] == G
    assert_healthy_rerun_completes(tmp_path, policy, judge)


@pytest.mark.parametrize("case", list(ROW_FAULTS))
def test_a_failing_judge_request_marks_only_its_row(case, servers, tmp_path):
    policy, judge = servers
    fault, kind = ROW_FAULTS[case]
    first = fault.match = first_problem()  # the judge requests of the first prompt's responses
    judge.faults.append(fault)
    code, output = run_cli(tmp_path, policy, judge)
    assert code == 3, output
    assert "row(s) failed (judge: " + kind in output
    judged = rows(tmp_path, "judge")
    failed = [r for r in judged if r["judge_status"] == "error"]
    wrong_first = [r for r in judged if r["problem"] == first and not r["is_correct"]]
    assert len(failed) == len(wrong_first) >= 1 and {r["problem"] for r in failed} == {first}
    assert {r["judge_error_kind"] for r in failed} == {kind} and all(r["judge_error"] for r in failed)
    others = [r for r in judged if r["problem"] != first and not r["is_correct"]]
    assert others and all(r["judge_status"] == "ok" for r in others)  # neighbours untouched
    assert_healthy_rerun_completes(tmp_path, policy, judge)


def test_fewer_choices_are_refilled_so_every_group_has_g_rows(servers, tmp_path):
    policy, judge = servers
    policy.faults.append(Fault("fewer_choices", choices=1, times=2))  # two requests come back with 1 of 4
    code, output = run_cli(tmp_path, policy, judge)
    assert code == 0, output
    generated = rows(tmp_path, "generate")
    assert len(generated) == PROMPTS * G and all(r["generate_status"] == "ok" for r in generated)
    assert len({r["response"] for r in generated if r["problem"] == generated[0]["problem"]}) > 1


def test_a_persistent_shortfall_is_a_counted_row_error(servers, tmp_path):
    policy, judge = servers
    policy.faults.append(Fault("fewer_choices", choices=1, match=first_problem()))  # 1 sample per request, always
    code, output = run_cli(tmp_path, policy, judge, "--set", "generate.max_refills=1")
    assert code == 3, output
    failed = [r for r in rows(tmp_path, "generate") if r["generate_status"] == "error"]
    assert len(failed) == G - 2 and {r["generate_error_kind"] for r in failed} == {"invalid_response"}
    assert "returned 2 of 4 samples" in failed[0]["generate_error"]
    assert_healthy_rerun_completes(tmp_path, policy, judge)


@pytest.mark.parametrize("fault", [Fault("status", status=429, retry_after=0.2, times=1),
                                   Fault("status", status=503, times=1), Fault("drop", times=1)],
                         ids=["429 with Retry-After", "one 503", "one dropped connection"])
def test_transient_faults_are_retried_and_leave_no_trace(fault, servers, tmp_path):
    policy, judge = servers
    policy.faults.append(fault)
    judge.faults.append(Fault(fault.kind, status=fault.status, retry_after=fault.retry_after, times=1))
    code, output = run_cli(tmp_path, policy, judge)
    assert code == 0, output
    assert policy.faults[0].fired == judge.faults[0].fired == 1
    assert all(r["generate_status"] == "ok" and r["judge_status"] != "error" for r in rows(tmp_path, "judge"))


# -- service faults: the stage stops with one line, exit 4; a rerun resumes ---------------------------------------

SERVICE_FAULTS = {
    "connection refused": (None, "cannot reach"),
    "outage mid-run": (Fault("drop", after=3), "cannot reach"),
    "429 past the retries": (Fault("status", status=429, retry_after=0.1), "rate-limited"),
    "401": (Fault("status", status=401), "refused the credentials (401)"),
}


@pytest.mark.parametrize("which", ["policy", "judge"])
@pytest.mark.parametrize("case", list(SERVICE_FAULTS))
def test_a_failing_service_stops_the_stage_and_a_rerun_resumes(case, which, servers, tmp_path):
    policy, judge = servers
    server = policy if which == "policy" else judge
    fault, message = SERVICE_FAULTS[case]
    if fault is None:
        server.stop()
    else:
        server.faults.append(fault)
    code, output = run_cli(tmp_path, policy, judge)
    assert code == 4, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and server.base_url in lines[0]
    stage = StageFiles(tmp_path, "generate" if which == "policy" else "judge")
    assert not stage.is_complete() and stage.missing_shards()  # unfinished shards are not marked complete
    assert not (tmp_path / "export").exists()
    if fault is None:
        server.restart()
    assert_healthy_rerun_completes(tmp_path, policy, judge)


def test_a_slow_server_still_prints_progress(servers, tmp_path):
    policy, judge = servers
    policy.faults.append(Fault("slow", delay_s=1.2, times=2))
    code, output = run_cli(tmp_path, policy, judge, "--set",
                           f"generate.backend.options={{base_url: '{policy.base_url}', timeout_s: 5}}",
                           "--progress-every", "0.5")
    assert code == 0, output
    assert "generate: 0/16 rows done" in output


def test_changing_max_in_flight_or_timeouts_of_a_finished_run_makes_no_new_call(servers, tmp_path):
    policy, judge = servers
    code, output = run_cli(tmp_path, policy, judge)
    assert code == 0, output
    before = len(policy.log), len(judge.log)
    code, output = run_cli(tmp_path, policy, judge, "--set", "generate.max_in_flight=8", "--set",
                           "judge.max_in_flight=3", "--set", "generate.max_refills=5", timeout_s=7)
    assert code == 0, output  # operational settings: no --overwrite asked for
    assert (len(policy.log), len(judge.log)) == before
    for marker in [*tmp_path.glob("generate/*.done"), *tmp_path.glob("judge/*.done")]:
        marker.unlink()  # as if killed before the markers: every shard is redone, its calls come from the cache
    code, output = run_cli(tmp_path, policy, judge, "--set", "generate.max_in_flight=12", "--set",
                           "judge.max_in_flight=5")
    assert code == 0, output
    assert (len(policy.log), len(judge.log)) == before
