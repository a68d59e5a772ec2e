"""Where shards run: `--shard i/N` processes filling one run folder, and the Ray executor on a local Ray instance.
Both must give exactly the rows of one unsharded run. Policy and judge are the fault server (no faults)."""

from __future__ import annotations

from pathlib import Path


from sgpo_data.run_reader import read_stage
import pytest

from tests.fault_server import FaultServer
from tests.helpers import run_cli, without_timing

STAGES = ("generate", "judge", "score", "export")


def export_rows(out: Path) -> list[dict]:
    return without_timing(read_stage(out, "export").to_pylist())


@pytest.fixture(scope="module")
def servers():
    with FaultServer() as policy, FaultServer() as judge:
        yield policy, judge


@pytest.fixture(scope="module")
def reference(servers, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    code, output = run_cli(out, *servers)
    assert code == 0, output
    return export_rows(out)


def test_two_shard_processes_give_the_rows_of_one_run(servers, reference, tmp_path):
    code, output = run_cli(tmp_path, *servers, "--shard", "0/2", stages=("generate",))
    assert code == 0 and "finished its 1 shard(s)" in output, output
    code, output = run_cli(tmp_path, *servers, "--shard", "0/2", stages=("judge",))
    assert code == 2 and "generate is incomplete: shard(s) 1 of 2 are not finished" in output  # names the missing shard
    for stage in STAGES:
        for shard in ("0/2", "1/2"):
            code, output = run_cli(tmp_path, *servers, "--shard", shard, stages=(stage,))
            assert code == 0, output
    assert export_rows(tmp_path) == reference


def test_the_ray_executor_gives_the_rows_of_one_run(servers, reference, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code, output = run_cli(tmp_path, *servers, "--executor", "ray", "--set", "ray.num_actors=2")
    finally:
        ray.shutdown()
    assert code == 0, output
    assert "generate (ray)" in output
    assert export_rows(tmp_path) == reference
