import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from sgpo_data.config import ColumnMap, DataConfig
from sgpo_data.data import load_prompts
from sgpo_data.errors import SgpoError
from sgpo_data.schema import PROMPT_SCHEMA

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared datasets not found at {SHARED}")

ROWS = [
    {"problem": "What is 2 + 3?", "solution": "2 + 3 = 5.", "answer": "5"},
    {"problem": "What is 4 * 6?", "solution": "4 * 6 = 24.", "answer": "24"},
    {"problem": "What is 9 - 7?", "solution": "9 - 7 = 2.", "answer": "2"},
]


def _load(source, **kw):
    return load_prompts(DataConfig(source=str(source), **kw))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- the real datasets, read in place --------------------------------------------------------------


@needs_shared
def test_math500_preset():
    t = _load(SHARED / "math500" / "test.jsonl", preset="math500")
    assert t.schema == PROMPT_SCHEMA and t.num_rows == 500
    row = t.slice(0, 1).to_pylist()[0]
    assert row["prompt_id"] == "test/precalculus/807.json"  # from unique_id
    assert row["reference_answer"] and row["reference_solution"] and row["data_source"] == "math500"


@needs_shared
def test_gsm8k_preset_splits_answer():
    t = _load(SHARED / "gsm8k" / "test.jsonl", preset="gsm8k")
    assert t.schema == PROMPT_SCHEMA and t.num_rows == 1319
    row = t.slice(0, 1).to_pylist()[0]
    assert row["reference_answer"] == "18"
    assert row["reference_solution"].startswith("Janet sells 16 - 3 - 4 = 9 duck eggs")
    answers = t["reference_answer"].to_pylist()
    assert all(a and "####" not in a and "," not in a for a in answers)
    assert not any("<<" in s or "####" in s for s in t["reference_solution"].to_pylist())
    assert row["prompt_id"] == "p-" + hashlib.sha1(row["problem"].encode()).hexdigest()[:16]


@needs_shared
def test_processbench_preset_has_no_references():
    t = _load(SHARED / "processbench" / "gsm8k.json", preset="processbench")
    assert t.schema == PROMPT_SCHEMA and t.num_rows == 400
    assert t["prompt_id"][0].as_py() == "gsm8k-0"
    assert t["reference_solution"].null_count == 400 and t["reference_answer"].null_count == 400


@needs_shared
def test_limit_keeps_first_rows():
    t = _load(SHARED / "gsm8k" / "test.jsonl", preset="gsm8k", limit=5)
    full = _load(SHARED / "gsm8k" / "test.jsonl", preset="gsm8k")
    assert t.num_rows == 5 and t["prompt_id"].to_pylist() == full["prompt_id"].to_pylist()[:5]


# --- formats and mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json_array", "json_lines", "csv", "parquet"])
def test_formats_give_the_same_table(tmp_path, fmt):
    if fmt == "jsonl":
        path = _jsonl(tmp_path / "toy.jsonl", ROWS)
    elif fmt == "json_array":
        path = tmp_path / "toy.json"
        path.write_text(json.dumps(ROWS, indent=2))
    elif fmt == "json_lines":
        path = _jsonl(tmp_path / "toy.json", ROWS)
    elif fmt == "csv":
        path = tmp_path / "toy.csv"
        pl.DataFrame(ROWS).write_csv(path)
    else:
        path = tmp_path / "toy.parquet"
        pl.DataFrame(ROWS).write_parquet(path)
    t = _load(path)
    assert t.schema == PROMPT_SCHEMA
    assert t["problem"].to_pylist() == [r["problem"] for r in ROWS]
    assert t["reference_answer"].to_pylist() == ["5", "24", "2"]
    assert t["data_source"].to_pylist() == ["toy"] * 3


def test_hash_ids_are_stable_and_distinct(tmp_path):
    path = _jsonl(tmp_path / "toy.jsonl", ROWS)
    ids = _load(path)["prompt_id"].to_pylist()
    assert ids == _load(path)["prompt_id"].to_pylist()
    assert len(set(ids)) == 3 and all(i.startswith("p-") and len(i) == 18 for i in ids)


def test_column_mapping_and_numeric_ids(tmp_path):
    rows = [{"q": r["problem"], "a": int(r["answer"]), "idx": 10 + i} for i, r in enumerate(ROWS)]
    cols = ColumnMap(problem="q", reference_solution=None, reference_answer="a", prompt_id="idx")
    t = _load(_jsonl(tmp_path / "mapped.jsonl", rows), columns=cols)
    assert t["prompt_id"].to_pylist() == ["10", "11", "12"]
    assert t["reference_answer"].to_pylist() == ["5", "24", "2"]
    assert t["reference_solution"].null_count == 3


def test_columns_override_preset(tmp_path):
    rows = [{"question": r["problem"], "sol": r["solution"], "ans": r["answer"]} for r in ROWS]
    cols = ColumnMap(problem="question", reference_solution="sol", reference_answer="ans")
    t = _load(_jsonl(tmp_path / "g.jsonl", rows), preset="gsm8k", columns=cols)
    assert t["reference_solution"].to_pylist()[0] == "2 + 3 = 5."
    assert t["data_source"].to_pylist()[0] == "gsm8k"


def test_arithmetic_source():
    t = load_prompts(DataConfig(source="arithmetic", limit=3))
    assert t.schema == PROMPT_SCHEMA and t.num_rows == 3
    assert t["data_source"].to_pylist() == ["arithmetic"] * 3


# --- errors ----------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(SgpoError, match=r"data file .*nope\.jsonl not found"):
        _load(tmp_path / "nope.jsonl")


def test_missing_column_names_column_and_present_ones(tmp_path):
    path = _jsonl(tmp_path / "q.jsonl", [{"question": "1+1?", "solution": "2", "answer": "2"}])
    with pytest.raises(SgpoError) as exc:
        _load(path)
    msg = str(exc.value)
    assert "q.jsonl" in msg and "'problem'" in msg and "question, solution, answer" in msg
    assert "--set data.columns.problem=" in msg and "preset" in msg


def test_missing_reference_column_is_an_error_unless_mapped_to_none(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?"}])
    with pytest.raises(SgpoError, match="'solution', 'answer' not found"):
        _load(path)
    t = _load(path, columns=ColumnMap(reference_solution=None, reference_answer=None))
    assert t["reference_answer"].to_pylist() == [None]


@pytest.mark.parametrize("name,content", [("e.jsonl", ""), ("e.json", "[]"), ("e.csv", "problem,solution,answer\n")])
def test_empty_file(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(SgpoError, match=rf"{name} has no rows"):
        _load(tmp_path / name)


def test_empty_problem_names_row(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", ROWS[:2] + [{"problem": "  ", "solution": "", "answer": "1"}])
    with pytest.raises(SgpoError, match=r"x\.jsonl: row 3 has an empty problem"):
        _load(path)


def test_duplicate_id(tmp_path):
    rows = [dict(r, id=f"a{i}") for i, r in enumerate(ROWS)]
    rows[2]["id"] = "a0"
    with pytest.raises(SgpoError, match=r"duplicate prompt_id 'a0' in rows 1 and 3"):
        _load(_jsonl(tmp_path / "d.jsonl", rows), columns=ColumnMap(prompt_id="id"))


def test_unknown_suffix(tmp_path):
    (tmp_path / "p.txt").write_text("What is 1 + 1?\n")
    with pytest.raises(SgpoError, match=r"unsupported format \.txt; supported: \.jsonl, \.json, \.parquet, \.csv"):
        _load(tmp_path / "p.txt")


def test_bad_hub_id_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the env var is read at import; if another test imported datasets first, patch the read values too
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(SgpoError) as exc:
        _load("nobody-here/no-such-dataset")
    msg = str(exc.value)
    assert "'nobody-here/no-such-dataset'" in msg and "could not be loaded from the Hub" in msg
    assert "local" in msg and "\n" not in msg
