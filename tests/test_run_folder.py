import json

import pyarrow as pa
import pytest

from sgpo_data.errors import SgpoError
from sgpo_data.stages.cache import CallCache, request_key
from sgpo_data.stages.run_folder import StageOutput


def _table(n):
    return pa.table({"prompt_id": [f"p{i}" for i in range(n)], "x": list(range(n))})


def test_shards_markers_manifest_and_resume(tmp_path):
    stage = StageOutput(tmp_path, "generate")
    stage.start({"a": 1}, "fp", num_shards=2)
    assert json.loads(stage.manifest_path.read_text())["status"] == "running"
    stage.write_shard(0, _table(3))
    assert stage.is_done(0) and not stage.is_done(1)
    with pytest.raises(SgpoError, match="incomplete; run `sgpo-data generate --out"):
        stage.read()

    resumed = StageOutput(tmp_path, "generate")  # a rerun with the same config keeps finished shards
    resumed.start({"a": 1}, "fp", num_shards=2)
    assert resumed.is_done(0) and not resumed.is_done(1)
    resumed.write_shard(1, _table(2))
    resumed.finish({"responses": 5})
    manifest = resumed.manifest()
    assert manifest["status"] == "complete" and manifest["rows"] == 5 and manifest["statistics"] == {"responses": 5}
    assert len(manifest["output_fingerprint"]) == 64
    assert resumed.read().num_rows == 5


def test_a_part_without_marker_is_not_trusted(tmp_path):
    stage = StageOutput(tmp_path, "judge")
    stage.start({}, "fp", num_shards=1)
    stage.part(0).write_bytes(b"half-written")
    assert not stage.is_done(0)


def test_other_config_or_input_refuses_unless_overwrite(tmp_path):
    stage = StageOutput(tmp_path, "score")
    stage.start({"beta": 5}, "fp", num_shards=1)
    stage.write_shard(0, _table(1))
    with pytest.raises(SgpoError, match="another config or input; pass --overwrite"):
        StageOutput(tmp_path, "score").start({"beta": 3}, "fp", num_shards=1)
    with pytest.raises(SgpoError, match="another config or input"):
        StageOutput(tmp_path, "score").start({"beta": 5}, "other", num_shards=1)
    fresh = StageOutput(tmp_path, "score")
    fresh.start({"beta": 3}, "fp", num_shards=1, overwrite=True)
    assert not fresh.is_done(0) and fresh.manifest()["config"] == {"beta": 3}


def test_call_cache_survives_reopening(tmp_path):
    key = request_key(model="m", conversations=[[{"role": "user", "content": "hi"}]], seed=1)
    assert key != request_key(model="m", conversations=[[{"role": "user", "content": "hi"}]], seed=2)
    cache = CallCache(tmp_path / "calls.sqlite")
    assert cache.get(key) is None
    cache.put(key, [{"text": "hello"}])
    cache.close()
    reopened = CallCache(tmp_path / "calls.sqlite")
    assert reopened.get(key) == [{"text": "hello"}] and len(reopened) == 1
