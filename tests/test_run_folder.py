import json

import pyarrow as pa
import pytest

from sgpo_data.errors import SgpoError
from sgpo_data.pipeline.cache import CallCache, request_key
from sgpo_data.pipeline.folder import StageFolder
from sgpo_data.pipeline.runner import ShardSpec


def _table(n):
    return pa.table({"prompt_id": [f"p{i}" for i in range(n)], "x": list(range(n))})


def test_shards_markers_manifest_and_resume(tmp_path):
    stage = StageFolder(tmp_path, "generate")
    stage.start({"a": 1}, "fp", num_shards=2)
    assert json.loads(stage.manifest_path.read_text())["status"] == "running"
    stage.write_shard(0, _table(3), "in-0", {})
    assert not stage.needs_work(0, "in-0") and stage.needs_work(1, "in-1")
    assert stage.finish({0: "in-0", 1: "in-1"}, lambda markers: {}) is None  # shard 1 is missing
    with pytest.raises(SgpoError, match=r"incomplete: shard\(s\) 1 of 2 are not finished; run `sgpo-data generate"):
        stage.read()

    resumed = StageFolder(tmp_path, "generate")  # a rerun with the same config keeps finished shards
    resumed.start({"a": 1}, "fp", num_shards=2)
    assert not resumed.needs_work(0, "in-0")
    resumed.write_shard(1, _table(2), "in-1", {"timeout": 1})
    manifest = resumed.finish({0: "in-0", 1: "in-1"}, lambda markers: {"responses": sum(m["rows"] for m in markers.values())})
    assert manifest["status"] == "complete" and manifest["rows"] == 5 and manifest["statistics"] == {"responses": 5}
    assert manifest["errors"] == {"timeout": 1} and len(manifest["output_fingerprint"]) == 64
    assert resumed.read().num_rows == 5


def test_a_shard_needs_work_when_missing_in_error_or_its_input_changed(tmp_path):
    stage = StageFolder(tmp_path, "judge")
    stage.start({}, "fp", num_shards=3)
    stage.part(0).write_bytes(b"half-written")  # a part without marker is not trusted
    stage.write_shard(1, _table(1), "in-1", {"server_error": 1})
    stage.write_shard(2, _table(1), "in-2", {})
    assert stage.needs_work(0, "in-0")
    assert stage.needs_work(1, "in-1")  # rows in error: a rerun retries them
    assert not stage.needs_work(2, "in-2") and stage.needs_work(2, "in-2-redone")


def test_other_config_or_input_refuses_unless_overwrite(tmp_path):
    stage = StageFolder(tmp_path, "score")
    stage.start({"beta": 5}, "fp", num_shards=1)
    stage.write_shard(0, _table(1), "in", {})
    with pytest.raises(SgpoError, match="another config or input; pass --overwrite"):
        StageFolder(tmp_path, "score").start({"beta": 3}, "fp", num_shards=1)
    with pytest.raises(SgpoError, match="another config or input"):
        StageFolder(tmp_path, "score").start({"beta": 5}, "other", num_shards=1)
    fresh = StageFolder(tmp_path, "score")
    fresh.start({"beta": 3}, "fp", num_shards=1, overwrite=True)
    assert fresh.needs_work(0, "in") and fresh.manifest()["config"] == {"beta": 3}


def test_shard_spec():
    assert ShardSpec.parse("1/4") == ShardSpec(1, 4) and ShardSpec.parse(None) == ShardSpec(0, 1)
    assert [i for i in range(10) if ShardSpec(1, 4).owns(i)] == [1, 5, 9]
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(SgpoError, match="expected i/N with 0 <= i < N"):
            ShardSpec.parse(bad)


def test_call_cache_survives_reopening(tmp_path):
    key = request_key(model="m", conversations=[[{"role": "user", "content": "hi"}]], seed=1)
    assert key != request_key(model="m", conversations=[[{"role": "user", "content": "hi"}]], seed=2)
    cache = CallCache(tmp_path / "calls.sqlite")
    assert cache.get(key) is None
    cache.put_many({key: [{"text": "hello"}]})
    cache.close()
    reopened = CallCache(tmp_path / "calls.sqlite")
    assert reopened.get(key) == [{"text": "hello"}] and len(reopened) == 1
