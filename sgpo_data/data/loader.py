"""Load prompts into PROMPT_SCHEMA: the embedded arithmetic set, a local file, or a Hub dataset.

Bad input is a crash with one line naming the file, the row or column, and the fix.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.config import ColumnMap, DataConfig
from sgpo_data.data.arithmetic import generate_arithmetic
from sgpo_data.errors import SgpoError
from sgpo_data.schema import PROMPT_SCHEMA

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")

PRESETS = {
    "math500": ColumnMap(problem="problem", reference_solution="solution", reference_answer="answer", prompt_id="unique_id"),
    # GSM8K's `answer` holds the worked solution ending in "#### 72"; _split_gsm8k separates the two
    "gsm8k": ColumnMap(problem="question", reference_solution="answer", reference_answer="answer", prompt_id=None),
    "processbench": ColumnMap(problem="problem", reference_solution=None, reference_answer=None, prompt_id="id"),
}

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def load_prompts(cfg: DataConfig) -> pa.Table:
    """Read `cfg.source`, map its columns (preset, then `cfg.columns`), validate, return PROMPT_SCHEMA rows."""
    if cfg.source == "arithmetic":
        table = pa.Table.from_pylist(generate_arithmetic(**cfg.arithmetic.model_dump()), schema=PROMPT_SCHEMA)
        return table.slice(0, cfg.limit) if cfg.limit else table
    raw, where, stem = _read_source(cfg)
    if raw.num_rows == 0:
        raise SgpoError(f"{where} has no rows; pass a file with at least one prompt")
    if cfg.limit:
        raw = raw.slice(0, cfg.limit)
    cmap = cfg.columns or PRESETS.get(cfg.preset) or ColumnMap()
    missing = [c for c in cmap.model_dump().values() if c is not None and c not in raw.column_names]
    if missing:
        raise SgpoError(
            f"{where}: column(s) {', '.join(map(repr, missing))} not found (columns present: {', '.join(raw.column_names)}); "
            "map it with --set data.columns.problem=<column> (likewise reference_solution, reference_answer, "
            "prompt_id; null for none) or a preset (data.preset=math500|gsm8k|processbench)"
        )
    problem = _text(raw, cmap.problem, where)
    solution = _text(raw, cmap.reference_solution, where)
    answer = _text(raw, cmap.reference_answer, where)
    if cfg.preset == "gsm8k" and cmap.reference_answer is not None:
        gsm_solution, answer = _split_gsm8k(answer)
        if cmap.reference_solution == cmap.reference_answer:
            solution = gsm_solution
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(problem), ""), True)
    if pc.any(empty).as_py():
        raise SgpoError(f"{where}: row {pc.index(empty, True).as_py()} has an empty problem; fix or drop that row")
    ids = _text(raw, cmap.prompt_id, where) if cmap.prompt_id else _hash_ids(problem)
    _check_ids(ids, where)
    source = pa.repeat(cfg.preset or stem, raw.num_rows)
    return pa.Table.from_arrays([ids, problem, solution, answer, source], schema=PROMPT_SCHEMA)


def _read_source(cfg: DataConfig) -> tuple[pa.Table, str, str]:
    """The raw table, how to name it in messages, and its data_source name."""
    src, path = cfg.source, Path(cfg.source).expanduser()
    if path.is_file():
        return _read_file(path), f"data file {src}", path.stem
    looks_like_path = src.startswith((".", "/", "~")) or re.fullmatch(r"\.[A-Za-z][A-Za-z0-9]{0,7}", path.suffix)
    if path.exists() or looks_like_path or not _HUB_ID.fullmatch(src):
        what = "is not a file" if path.exists() else "not found"
        raise SgpoError(f"data file {src} {what}; pass a {'/'.join(SUFFIXES)} file, a Hub dataset id or 'arithmetic'")
    return _read_hub(cfg), f"Hub dataset {src}", src


def _read_file(path: Path) -> pa.Table:
    import polars as pl

    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SgpoError(f"data file {path}: unsupported format {suffix or '(no suffix)'}; supported: {', '.join(SUFFIXES)}")
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path).to_arrow()
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema=False).to_arrow()  # all text: ids like 007 stay intact
        text = path.read_text(encoding="utf-8").lstrip()
        if not text:
            return pa.table({})
        if suffix == ".json" and text.startswith("["):
            return pl.read_json(path, infer_schema_length=None).to_arrow()
        return pl.read_ndjson(path, infer_schema_length=None).to_arrow()
    except Exception as exc:  # polars raises many types; all mean "this file cannot be read"
        raise SgpoError(f"data file {path} could not be read as {suffix[1:]}: {_first_line(exc)}") from None


def _read_hub(cfg: DataConfig) -> pa.Table:
    try:
        import datasets

        ds = datasets.load_dataset(cfg.source, cfg.subset, split=cfg.split)
        return ds.with_format("arrow")[:]
    except Exception as exc:  # offline, unknown id, gated, missing split: all end the run the same way
        raise SgpoError(
            f"Hub dataset {cfg.source!r} (subset={cfg.subset}, split={cfg.split}) could not be loaded from the Hub: "
            f"{_first_line(exc)}; a local .jsonl/.json/.parquet/.csv file path also works as data.source"
        ) from None


def _text(table: pa.Table, column: str | None, where: str) -> pa.ChunkedArray:
    if column is None:
        return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    try:
        return pc.cast(table[column], pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise SgpoError(f"{where}: column {column!r} ({table[column].type}) cannot be read as text; map a text column") from None


def _split_gsm8k(answer: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """'... <<48/2=24>>24 ...\\n#### 1,072' -> ('... 24 ...', '1072'); rows without '####' keep the text as solution."""
    parts = pc.extract_regex(answer, r"(?s)^(?P<sol>.*?)####(?P<ans>.*)$")
    solution = pc.coalesce(pc.struct_field(parts, "sol"), answer)
    solution = pc.utf8_trim_whitespace(pc.replace_substring_regex(solution, r"<<[^>]*>>", ""))
    final = pc.utf8_trim_whitespace(pc.replace_substring(pc.struct_field(parts, "ans"), ",", ""))
    return solution, final


def _hash_ids(problem: pa.ChunkedArray) -> pa.Array:
    return pa.array(["p-" + hashlib.sha1(p.encode()).hexdigest()[:16] for p in problem.to_pylist()], pa.string())


def _check_ids(ids: pa.ChunkedArray | pa.Array, where: str) -> None:
    if ids.null_count:
        row = pc.index(pc.is_null(ids), True).as_py()
        raise SgpoError(f"{where}: row {row} has no prompt_id; fill it or map data.columns.prompt_id=null to hash the problem")
    counts = pc.value_counts(ids)
    dups = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dups):
        dup = dups[0]["values"].as_py()
        rows = pc.indices_nonzero(pc.equal(ids, dup)).to_pylist()
        raise SgpoError(
            f"{where}: duplicate prompt_id {dup!r} in rows {rows[0]} and {rows[1]}; prompt ids must be unique "
            "(drop the duplicate, or map data.columns.prompt_id to a unique column)"
        )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
