"""The run-folder lock: one process per run folder, or one per --shard i/N; a killed holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgpo_data.errors import SgpoError
from sgpo_data.pipeline.lock import RunLock

REPO = Path(__file__).resolve().parents[1]


def test_a_second_holder_is_refused_with_the_pid(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(SgpoError, match=rf"is in use by pid {os.getpid()} on "):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: free again
        pass


def test_shard_processes_coexist_but_not_with_an_unsharded_one(tmp_path):
    with RunLock(tmp_path, 0, 2), RunLock(tmp_path, 1, 2):
        with pytest.raises(SgpoError, match=r"in use by pid \d+"):
            RunLock(tmp_path, 1, 2).acquire()  # the same shard twice
        with pytest.raises(SgpoError, match=r"in use by --shard processes \(shard-0-of-2, shard-1-of-2\)"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):
        with pytest.raises(SgpoError, match="in use by pid"):
            RunLock(tmp_path, 0, 2).acquire()


@pytest.mark.slow
def test_a_lock_left_by_kill_9_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from sgpo_data.pipeline.lock import RunLock; lock = RunLock(sys.argv[2]).acquire(); print('held', flush=True);"
        "time.sleep(600)"), str(REPO), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(SgpoError, match=f"in use by pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".lock").exists()  # the file stays behind; the kernel dropped the lock
    deadline = time.time() + 10
    while True:
        try:
            RunLock(tmp_path).acquire().release()
            break
        except SgpoError:
            assert time.time() < deadline
            time.sleep(0.1)


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_run_is_taken_over(tmp_path):
    """Two real `sgpo-data run` on one folder: the second refuses at once, naming the first's pid; after kill -9
    of the first, a rerun takes the lock over and finishes the run."""
    from tests.fault_server import Fault, FaultServer
    from tests.helpers import G, PROMPTS, cli_args, run_cli

    with FaultServer() as policy, FaultServer() as judge:
        policy.faults.append(Fault("slow", delay_s=1.0, after=G // 2))  # keeps the first run busy
        first = subprocess.Popen([sys.executable, "-m", "sgpo_data_cli", *cli_args(tmp_path, policy, judge)],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not policy.log and time.time() < deadline:  # it holds the lock once it sends requests
            time.sleep(0.1)
        code, output = run_cli(tmp_path, policy, judge)
        assert code == 2 and f"is in use by pid {first.pid} on " in output, output
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        policy.faults.clear()
        code, output = run_cli(tmp_path, policy, judge)
        assert code == 0, output
        from sgpo_data.run_reader import read_stage

        assert read_stage(tmp_path, "export").num_rows == PROMPTS * G
