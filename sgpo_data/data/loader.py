"""Load prompts into PROMPT_SCHEMA: the embedded arithmetic set, a local file, or a Hub dataset.

Bad input is a crash with one line naming the file, the row or column, and the fix.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.config import ColumnMap, DataConfig
from sgpo_data.data.arithmetic import generate_arithmetic
from sgpo_data.errors import SgpoError, first_line
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
            f"prompt_id; null for none) or a preset (data.preset={'|'.join(PRESETS)})"
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
        raise SgpoError(f"{where}: row {pc.index(empty, True).as_py() + 1} has an empty problem; fix or drop that row")
    ids = _text(raw, cmap.prompt_id, where) if cmap.prompt_id else _hash_ids(problem)
    _check_ids(ids, where)
    source = pa.repeat(cfg.preset or stem, raw.num_rows)
    return pa.Table.from_arrays([ids, problem, solution, answer, source], schema=PROMPT_SCHEMA)


def _read_source(cfg: DataConfig) -> tuple[pa.Table, str, str]:
    """The raw table, how to name it in messages, and its data_source name."""
    src, path = cfg.source, Path(cfg.source)
    try:
        path = path.expanduser()
    except RuntimeError:  # "~nobody/x.jsonl": no such user's home; the path is read as written
        pass
    try:
        is_file, exists = path.is_file(), path.exists()
    except OSError as exc:  # e.g. a name too long for the filesystem
        raise SgpoError(f"data file {src[:200]!r} cannot be opened ({exc.strerror or exc}); pass a {'/'.join(SUFFIXES)} "
                        "file, a Hub dataset id or 'arithmetic'") from None
    if is_file:
        return _read_file(path), f"data file {src}", path.stem
    looks_like_path = src.startswith((".", "/", "~")) or re.fullmatch(r"\.[A-Za-z][A-Za-z0-9]{0,7}", path.suffix)
    if exists or looks_like_path or not _HUB_ID.fullmatch(src):
        what = "is not a file" if exists else "not found"
        raise SgpoError(f"data file {src} {what}; pass a {'/'.join(SUFFIXES)} file, a Hub dataset id or 'arithmetic'")
    return _read_hub(cfg), f"Hub dataset {src}", src


def _read_file(path: Path) -> pa.Table:
    import polars as pl

    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SgpoError(f"data file {path}: unsupported format {suffix or '(no suffix)'}; supported: {', '.join(SUFFIXES)}")
    if suffix == ".parquet":
        try:
            return pl.read_parquet(path).to_arrow()
        except Exception as exc:  # polars raises many types; all mean "this file cannot be read"
            raise SgpoError(f"data file {path} could not be read as parquet: {first_line(exc)}; check that it is a "
                            "Parquet file (a file in another format needs that format's suffix)") from None
    data, text = _read_text(path)
    if suffix == ".csv":
        return _read_csv(text, path)
    if not text.strip():
        return pa.table({})
    if suffix == ".json" and text.lstrip().startswith("["):
        return _read_json_array(data, text, path)
    return _read_jsonl(data, text, path)


def _read_text(path: Path) -> tuple[bytes, str]:
    """The file's bytes (without a UTF-8 byte order mark) and their text; bytes that are not UTF-8 are one error
    naming their line."""
    try:
        data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    except OSError as exc:
        raise SgpoError(f"data file {path} could not be read ({exc.strerror or exc}); check the file") from None
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SgpoError(f"data file {path} line {line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the "
                        "file as UTF-8") from None


def _ndjson(data: bytes) -> pa.Table:
    import polars as pl

    return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None).to_arrow()


def _read_jsonl(data: bytes, text: str, path: Path) -> pa.Table:
    """One JSON object per line, read by polars; when it fails, the first line at fault is found and named."""
    try:
        return _ndjson(data)
    except Exception as exc:  # polars raises many types; all mean "this file cannot be read"
        reason = first_line(exc)
    lines = text.split("\n")  # polars' lines: only \n ends one (\r\n leaves a \r, which JSON takes as whitespace)
    for number, line in enumerate(lines, 1):
        if line.strip(" \t\r") and (problem := _json_problem(line)):
            raise SgpoError(f"data file {path} line {number}: {problem}; fix or remove that line (each line holds one "
                            "JSON object)")
    # Every line is a JSON object, but the lines do not make one table (a column with values of different types):
    # the first line that polars cannot take with the lines before it is at fault.
    def fails(n: int) -> str | None:
        prefix = "\n".join(lines[:n])
        if not prefix.strip():
            return None
        try:
            _ndjson(prefix.encode())
        except Exception as exc:
            return first_line(exc)
        return None

    good, bad, why = 0, len(lines), reason  # the empty prefix reads, the whole file does not
    while bad - good > 1:
        mid = (good + bad) // 2
        if (failure := fails(mid)) is None:
            good = mid
        else:
            bad, why = mid, failure
    raise SgpoError(f"data file {path} line {bad}: its values do not fit the columns of the lines before it ({why}); "
                    "give each column values of one type (e.g. quote numbers as strings), or remove that line")


def _read_json_array(data: bytes, text: str, path: Path) -> pa.Table:
    """A JSON list of objects, read by polars; when it fails, the place at fault is named if it can be found."""
    import polars as pl

    try:
        return pl.read_json(io.BytesIO(data), infer_schema_length=None).to_arrow()
    except Exception as exc:  # polars raises many types; all mean "this file cannot be read"
        reason = first_line(exc)
    try:
        items = _strict_json(text)
    except json.JSONDecodeError as exc:
        raise SgpoError(f"data file {path} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); fix it, "
                        "or write one object per line in a .jsonl file") from None
    except (ValueError, RecursionError) as exc:
        raise SgpoError(f"data file {path}: {_json_error(exc)}; fix it, or write one object per line in a .jsonl "
                        "file") from None
    bad = next((i for i, item in enumerate(items) if not isinstance(item, dict)), None)
    if bad is not None:
        raise SgpoError(f"data file {path}: item {bad} of the list is {_json_kind(items[bad])}, not an object; the "
                        "file must be a list of {...} objects, one per prompt")
    raise SgpoError(f"data file {path} could not be read as json: {reason}; give each field values of one type "
                    "(e.g. quote numbers as strings)")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _int64(text: str) -> int:
    if len(text.lstrip("-").lstrip("0")) > 19 or not -(2**63) <= (value := int(text)) < 2**63:
        raise ValueError(f"the integer {text[:20]}{'…' if len(text) > 20 else ''} does not fit in 64 bits (write it "
                         "as a string)")
    return value


def _strict_json(text: str):
    """`json.loads` that refuses what polars refuses: NaN and Infinity, numbers past float or 64-bit int range."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_int64)


def _json_problem(line: str) -> str | None:
    """Why one line of a .jsonl file is not a JSON object, or None when it is one."""
    try:
        value = _strict_json(line)
    except (ValueError, RecursionError) as exc:
        return _json_error(exc)
    return None if isinstance(value, dict) else f"not a JSON object (it is {_json_kind(value)})"


def _json_error(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "not readable JSON (nested too deeply)"
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON at column {exc.colno} ({exc.msg})"
    return f"not readable JSON ({exc})"


def _json_kind(value) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _read_csv(text: str, path: Path) -> pa.Table:
    """A CSV file as text columns (ids like 007 stay intact; an empty field is null), read strictly: a row with
    another number of fields than the header, a broken quote or a NUL byte is one error naming its row (1-based:
    row 1 is the first data row, as in the other messages) and line."""
    if (nul := text.find("\0")) >= 0:
        raise SgpoError(f"data file {path} line {text.count(chr(10), 0, nul) + 1}: holds a NUL byte (binary data?); "
                        "save the file as UTF-8 text")
    limit = csv.field_size_limit(2**31 - 1)  # the default (131072 characters) is too small for long solutions
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header, rows, line = None, [], 1
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                where = f"line {line}" if header is None else f"row {len(rows) + 1} (line {line})"
                raise SgpoError(f"data file {path} {where}: {exc} (a broken quote?); a field that holds a quote, comma "
                                'or line break is written in quotes, with each quote inside doubled ("say ""hi""")') \
                    from None
            start, line = line, reader.line_num + 1
            if not record:  # a blank line
                continue
            if header is None:
                header = record
                if dups := sorted(name for name, n in Counter(header).items() if n > 1):
                    raise SgpoError(f"data file {path} line {start}: the header names column {dups[0]!r} more than "
                                    "once; give every column its own name")
            elif len(record) != len(header):
                raise SgpoError(f"data file {path} row {len(rows) + 1} (line {start}) has {len(record)} field(s) but the "
                                f"header has {len(header)}; quote a field that holds a comma, and give every row all "
                                "the header's fields")
            else:
                rows.append(record)
    finally:
        csv.field_size_limit(limit)
    if header is None:
        return pa.table({})
    columns = zip(*rows) if rows else [()] * len(header)
    return pa.table({name: pa.array([v if v else None for v in values], pa.string())
                     for name, values in zip(header, columns)})


def _read_hub(cfg: DataConfig) -> pa.Table:
    try:
        import datasets

        ds = datasets.load_dataset(cfg.source, cfg.subset, split=cfg.split)
        return ds.with_format("arrow")[:]
    except Exception as exc:  # offline, unknown id, gated, missing split: all end the run the same way
        raise SgpoError(
            f"Hub dataset {cfg.source!r} (subset={cfg.subset}, split={cfg.split}) could not be loaded from the Hub: "
            f"{first_line(exc)}; a local .jsonl/.json/.parquet/.csv file path also works as data.source"
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
        row = pc.index(pc.is_null(ids), True).as_py() + 1
        raise SgpoError(f"{where}: row {row} has no prompt_id; fill it or map data.columns.prompt_id=null to hash the problem")
    counts = pc.value_counts(ids)
    dups = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dups):
        dup = dups[0]["values"].as_py()
        rows = pc.indices_nonzero(pc.equal(ids, dup)).to_pylist()
        raise SgpoError(
            f"{where}: duplicate prompt_id {dup!r} in rows {rows[0] + 1} and {rows[1] + 1}; prompt ids must be unique "
            "(drop the duplicate, or map data.columns.prompt_id to a unique column)"
        )

