"""How well does a step judge find the first wrong step? ProcessBench's measure, on ProcessBench-format data.

Each item is a solution already cut into steps, with the 0-based index of its earliest wrong step (`label`, -1:
none). Per subset: the accuracy on the erroneous items (the exact step), the accuracy on the correct ones
(answering -1), and their harmonic mean F1, in percent as ProcessBench reports them; the unweighted mean F1 over
subsets; where predictions fall against the truth (early, exact, late, missed); parse failures; and the cost.

Data: the Hub id `Qwen/ProcessBench` (its four splits), a folder of `<subset>.json`/`.jsonl` files, or one JSON or
JSONL file of `{id, problem, steps, label, final_answer_correct}` (one subset, named after the file).

Output, in one folder: predictions.jsonl, one line per item written as soon as it is judged (an item is named by
its subset, its place in the subset and its id); evaluation.json, what they are predictions of (the judge, the
sample, a digest of the items); metrics.json at the end. A rerun of the same evaluation into the same folder
resumes it, judging only the items that have no verdict yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sgpo_data.errors import SgpoError
from sgpo_data.judges.base import Judge, Verdict
from sgpo_data.judges.core import Judging, Row
from sgpo_data.pipeline.stage import Shard
from sgpo_data.schema import JudgeStatus

SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
HUB_ID = "Qwen/ProcessBench"
PREDICTIONS, EVALUATION, METRICS = "predictions.jsonl", "evaluation.json", "metrics.json"
TRUTH = "label"  # the column eval-judge scores against
RECORD_KEYS = ("subset", "index", "id", "label", "prediction", "status")
BATCH = 256  # items per job: a reward model batches within it, an engine keeps its window full across jobs


@dataclass(frozen=True)
class Item:
    id: str
    problem: str
    steps: list[str]
    label: int
    columns: dict  # every field of the item (a labels judge reads its column from here)
    index: int  # its place in its subset's file or split: with the id, what names it in predictions.jsonl


def load_processbench(source: str, subsets: list[str] | None = None) -> dict[str, list[Item]]:
    """Subset name → checked items. A bad item is one error naming the file (or split) and the item."""
    path = Path(source)
    if path.is_file():
        if subsets and subsets != [path.stem]:
            raise SgpoError(f"{path} is one subset ({path.stem!r}); --subset {', '.join(subsets)} is not in it")
        return {path.stem: _checked(_read_file(path), str(path))}
    if path.is_dir():
        found = {f.stem: f for f in sorted(path.iterdir()) if f.suffix in (".json", ".jsonl")}
        wanted = subsets or [s for s in SUBSETS if s in found] or sorted(found)
        if missing := [s for s in wanted if s not in found]:
            raise SgpoError(f"{path}: no file for subset(s) {', '.join(missing)}; found: {', '.join(found) or 'none'} "
                            f"(expected <subset>.json or <subset>.jsonl)")
        return {s: _checked(_read_file(found[s]), str(found[s])) for s in wanted}
    if "/" in source and not source.startswith((".", "/")):
        return _load_hub(source, subsets or list(SUBSETS))
    raise SgpoError(f"--data {source}: no such file or folder, and not a Hub dataset id (owner/name)")


def _read_file(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise SgpoError(f"{path}: line {line} is not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as "
                        "UTF-8") from None
    except OSError as exc:
        raise SgpoError(f"{path} could not be read ({exc.strerror or exc}); check the file") from None
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.split("\n"), 1):  # only \n ends a line: JSON strings may hold \u2028
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except (ValueError, RecursionError) as exc:
                    problem = _json_problem(exc)
                    raise SgpoError(f"{path}: line {number} is not JSON ({problem}); fix or remove it") from None
        return rows
    try:
        rows = json.loads(text)
    except (ValueError, RecursionError) as exc:
        problem = _json_problem(exc)
        raise SgpoError(f"{path}: not valid JSON ({problem}); give a JSON list of items or a .jsonl file") from None
    if not isinstance(rows, list):
        raise SgpoError(f"{path}: expected a JSON list of items, got {type(rows).__name__}")
    return rows


def _json_problem(exc: ValueError | RecursionError) -> str:
    """Why json.loads refused a text: bad syntax, nesting too deep for it, or an integer too long to convert."""
    if isinstance(exc, json.JSONDecodeError):
        line = f"line {exc.lineno}, " if "\n" in exc.doc else ""  # the line of a .jsonl file is named already
        return f"{exc.msg} at {line}column {exc.colno}"
    return "nested too deeply" if isinstance(exc, RecursionError) else "a number with too many digits"


def _load_hub(repo: str, subsets: list[str]) -> dict[str, list[Item]]:
    import datasets

    out = {}
    for subset in subsets:
        try:
            rows = datasets.load_dataset(repo, split=subset)
        except ValueError as exc:  # an unknown split
            raise SgpoError(f"{repo}: no split {subset!r} ({str(exc).splitlines()[0]}); splits of ProcessBench: "
                            f"{', '.join(SUBSETS)}") from None
        out[subset] = _checked(list(rows), f"{repo}[{subset}]")
    return out


def _checked(rows: list, where: str) -> list[Item]:
    items = []
    for index, row in enumerate(rows):
        name = f"{where}: item {index}" + (f" (id {row.get('id')!r})" if isinstance(row, dict) and "id" in row else "")
        if not isinstance(row, dict):
            raise SgpoError(f"{name} is not an object with problem, steps and label")
        for key in ("problem", "steps", "label"):
            if key not in row:
                raise SgpoError(f"{name} has no {key!r}; every item needs problem, steps and label")
        steps, label = row["steps"], row["label"]
        if not isinstance(row["problem"], str):
            raise SgpoError(f"{name}: 'problem' must be a string")
        if not isinstance(steps, list) or not steps:
            raise SgpoError(f"{name}: 'steps' must be a non-empty list of strings, got {_short(steps)}")
        if bad := [i for i, s in enumerate(steps) if not isinstance(s, str)]:
            raise SgpoError(f"{name}: steps[{bad[0]}] is {type(steps[bad[0]]).__name__}, not a string")
        if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
            raise SgpoError(f"{name}: label {label!r} is out of range; it must be -1 (no error) or a step index "
                            f"0..{len(steps) - 1}")
        items.append(Item(str(row.get("id", index)), row["problem"], steps, label, row, index))
    return items


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def sample(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    """Every item, or a seeded random sample of `limit` in their original order."""
    if limit is None or limit >= len(items):
        return items
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), limit))]


def metrics(labels: list[int], verdicts: list[Verdict]) -> dict:
    """ProcessBench's figures for one subset, and where the predictions fall."""
    erroneous = [(label, v) for label, v in zip(labels, verdicts) if label >= 0]
    correct = [v for label, v in zip(labels, verdicts) if label == -1]

    def pct(hits: int, n: int) -> float | None:
        return round(100.0 * hits / n, 2) if n else None

    acc_err = pct(sum(v.first_error_step == label for label, v in erroneous), len(erroneous))
    acc_cor = pct(sum(v.first_error_step == -1 for v in correct), len(correct))
    parse_failures = sum(v.status == JudgeStatus.PARSE_ERROR for v in verdicts)
    f1 = None
    if acc_err is not None and acc_cor is not None:
        f1 = round(2 * acc_err * acc_cor / (acc_err + acc_cor), 2) if acc_err + acc_cor else 0.0
    positions = {"early": 0, "exact": 0, "late": 0, "missed": 0, "no_verdict": 0}
    for label, v in erroneous:
        k = v.first_error_step
        positions["no_verdict" if k is None else "missed" if k == -1 else
                  "early" if k < label else "exact" if k == label else "late"] += 1
    on_correct = {"right": sum(v.first_error_step == -1 for v in correct),
                  "false_alarm": sum(v.first_error_step is not None and v.first_error_step >= 0 for v in correct),
                  "no_verdict": sum(v.first_error_step is None for v in correct)}
    return {
        "items": len(labels), "erroneous": len(erroneous), "correct": len(correct),
        "acc_erroneous": acc_err, "acc_correct": acc_cor, "f1": f1,
        "erroneous_predictions": positions, "correct_predictions": on_correct,
        "parse_failures": parse_failures,
        "parse_failure_rate": round(parse_failures / max(1, len(verdicts)), 4),
        "request_errors": sum(v.status == JudgeStatus.ERROR for v in verdicts),
        "calls": sum(v.calls for v in verdicts),
        "prompt_tokens": sum(v.prompt_tokens or 0 for v in verdicts),
        "completion_tokens": sum(v.completion_tokens or 0 for v in verdicts),
    }


def check_reads_no_truth(judge: Judge, name: str, options: dict) -> None:
    """eval-judge scores against `label`: a judge that reads its verdicts from that column (the labels judge by
    default) would grade the ground truth against itself and report F1 100."""
    if TRUTH not in judge.columns:
        return
    fix = "name the column that holds the predictions, e.g. --judge-column my_predictions"
    if name != "labels":
        raise SgpoError(f"judge {name}: its labels judge would read {TRUTH!r}, the ground truth eval-judge scores "
                        f"against; set that judge's column option to the column that holds the predictions (e.g. "
                        f"my_predictions, as --judge-column my_predictions does for --judge labels)")
    if "column" in options:
        raise SgpoError(f"--judge-column {TRUTH} is the ground truth eval-judge scores against, not predictions; {fix}")
    raise SgpoError(f"--judge labels needs --judge-column: by default it reads {TRUTH!r}, the ground truth eval-judge "
                    f"scores against; {fix}")


def evaluation_identity(judge_config, judge: Judge, data: dict[str, list[Item]], limit: int | None, seed: int) -> dict:
    """What an evaluation's predictions depend on: the judge (its options as validated, so a default spelled out
    changes nothing; not its concurrency or timeouts), the sample and the items themselves. A rerun into the same
    folder resumes only when all of it matches. As JSON reads it back, with no password of a base_url in it."""
    from sgpo_data.config import identity as operative
    from sgpo_data.redaction import redact

    cfg = judge_config
    judge_part = {"name": cfg.name, "options": cfg.resolve("judge").model_dump(),
                  "backend": cfg.backend.name, "model": cfg.model,
                  "backend_options": operative(cfg.backend.resolve("judge.backend")),
                  "identity": judge.identity()}
    found = {"judge": judge_part, "sample": {"limit": limit, "seed": seed}, "items": _fingerprint(data)}
    return json.loads(json.dumps(redact(found), default=str))


def _fingerprint(data: dict[str, list[Item]]) -> str:
    digest = hashlib.sha256()
    for name, items in data.items():
        for x in items:
            digest.update(json.dumps([name, x.index, x.columns], sort_keys=True, default=str).encode() + b"\n")
    return digest.hexdigest()


class Predictions:
    """OUT/predictions.jsonl written as items are judged, one flushed line each, so an interrupted evaluation keeps
    every verdict it paid for; OUT/evaluation.json says what they are predictions of. Opening a folder that holds
    the same evaluation resumes it: items with a verdict are kept (a request that failed is asked again), and a
    torn last line, left by a crash mid-write, is cut off. Another evaluation there is refused unless `overwrite`."""

    def __init__(self, out: Path, identity: dict, overwrite: bool = False):
        self.out, self.path = out, out / PREDICTIONS
        _make_folder(out)
        for name in (PREDICTIONS, EVALUATION, METRICS):
            if (out / name).exists() and not (out / name).is_file():
                raise SgpoError(f"--out {out}: {name} there is not a file; remove it, or choose another --out")
        if overwrite:
            for name in (PREDICTIONS, EVALUATION, METRICS):
                _remove(out / name)
        self._check_same(identity)
        self.records: dict[tuple, dict] = {}
        if (end := self._read()) is not None:
            _cut(self.path, end)  # a torn last line goes, so the next line starts on its own
        self.run = 1 + max((r.get("run", 0) for r in self.records.values()), default=0)
        self.file = _writable(self.path, "a")
        _write_atomic(out / EVALUATION, json.dumps(identity, indent=2) + "\n")

    def done(self, subset: str, item: Item) -> bool:
        record = self.records.get((subset, item.index, item.id))
        return record is not None and record["status"] != JudgeStatus.ERROR

    def add(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()  # a crash now loses nothing already paid for
        self.records[(record["subset"], record["index"], record["id"])] = record

    def of(self, subset: str, items: list[Item]) -> list[dict]:
        return [self.records[(subset, x.index, x.id)] for x in items]

    def finish(self, data: dict[str, list[Item]], result: dict) -> None:
        """metrics.json, and predictions.jsonl rewritten with one line per item in data order (a retried item's
        failed attempt dropped); both replaced whole, so a crash leaves the old or the new file."""
        self.close()
        lines = [json.dumps(r) + "\n" for name, items in data.items() for r in self.of(name, items)]
        _write_atomic(self.path, "".join(lines))
        _write_atomic(self.out / METRICS, json.dumps(result, indent=2) + "\n")

    def close(self) -> None:
        self.file.close()

    def _check_same(self, identity: dict) -> None:
        where = self.out / EVALUATION
        if not where.exists():
            if (self.out / PREDICTIONS).exists() or (self.out / METRICS).exists():
                raise SgpoError(f"--out {self.out} holds predictions without {EVALUATION}, so they cannot be resumed; "
                                f"pass --overwrite to start afresh, or choose another --out")
            return
        try:
            found = json.loads(where.read_text())
        except (OSError, ValueError) as exc:
            raise SgpoError(f"{where} could not be read ({exc}); pass --overwrite to start afresh") from None
        for part, what in (("judge", "judge config"), ("sample", "sample"), ("items", "data")):
            if (difference := _difference(found.get(part), identity[part], part)) is not None:
                if part == "items":  # a digest says nothing to a reader
                    difference = "the items to judge are not those judged there"
                raise SgpoError(f"--out {self.out} holds an evaluation whose {what} differs ({difference}); rerun "
                                f"with the same settings to resume it, pass --overwrite to start afresh, or choose "
                                f"another --out")

    def _read(self) -> int | None:
        """Load the records; where the complete lines end when a torn last line follows them, else None."""
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
        except OSError as exc:
            raise SgpoError(f"{self.path} could not be read ({exc.strerror or exc}); pass --overwrite to start "
                            f"afresh") from None
        complete, newline, torn = data.rpartition(b"\n")
        for number, line in enumerate(complete.split(b"\n") if newline else [], 1):
            record = _record_of(line)
            if record is None:
                raise SgpoError(f"{self.path}: line {number} is not a prediction of eval-judge; remove it, or pass "
                                f"--overwrite to start afresh")
            self.records[(record["subset"], record["index"], record["id"])] = record
        return len(complete + newline) if torn else None


def _record_of(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return record if isinstance(record, dict) and all(k in record for k in RECORD_KEYS) else None


def _difference(old, new, key: str) -> str | None:
    """The first key at which two JSON values differ, with both values, or None when they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*old, *(k for k in new if k not in old)]:  # in the order written: the judge's name first
            if (found := _difference(old.get(k), new.get(k), f"{key}.{k}")) is not None:
                return found
        return None
    return None if old == new else f"{key}: {_short(old)} there, {_short(new)} now"


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SgpoError(f"--out {out} is a file, not a folder; pass a folder (it is made if missing)") from None
    except OSError as exc:
        raise SgpoError(f"--out {out}: the folder could not be made ({exc.strerror or exc}); pass a folder you can "
                        f"write to") from None


def _writable(path: Path, mode: str):
    try:
        return open(path, mode, encoding="utf-8")
    except OSError as exc:
        raise SgpoError(f"--out {path.parent}: {path.name} could not be written ({exc.strerror or exc}); pass a "
                        f"folder you can write to") from None


def _cut(path: Path, end: int) -> None:
    try:
        os.truncate(path, end)
    except OSError as exc:
        raise SgpoError(f"--out {path.parent}: {path.name} could not be written ({exc.strerror or exc}); pass a "
                        f"folder you can write to") from None


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with _writable(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise SgpoError(f"--overwrite: {path} could not be removed ({exc.strerror or exc}); remove it by "
                        f"hand") from None


def evaluate(judging: Judging, data: dict[str, list[Item]], predictions: Predictions,
             on_subset: Callable[[str, dict], None] = lambda name, m: None) -> dict:
    """Judge every item of every subset that `predictions` has no verdict for (reference-free: ProcessBench has
    no reference solutions), adding each verdict as it comes. Returns the metrics of all of them, old and new."""
    for name, items in data.items():  # every subset checked before anything is judged
        for column in judging.judge.columns:
            if items and not any(column in x.columns for x in items):
                raise SgpoError(f"{name}: no item has the column {column!r} the judge reads (judge.options.column); "
                                f"the items have: {', '.join(items[0].columns)}")
    subsets = {}
    for name, items in data.items():
        started = time.perf_counter()

        def write(x: Item, v: Verdict) -> None:
            predictions.add({"subset": name, "index": x.index, "id": x.id, "label": x.label,
                             "prediction": v.first_error_step, "status": v.status, "raw": v.raw, "judge": v.judge,
                             "calls": v.calls, "prompt_tokens": v.prompt_tokens,
                             "completion_tokens": v.completion_tokens, "seconds": round(v.seconds, 4),
                             "error": v.error, "run": predictions.run,
                             "elapsed": round(time.perf_counter() - started, 4)})

        _judge_all(judging, [x for x in items if not predictions.done(name, x)], write)
        records = predictions.of(name, items)
        subsets[name] = {**metrics([r["label"] for r in records], [_verdict(r) for r in records]),
                         "seconds": _wall_seconds(records)}
        on_subset(name, subsets[name])
    f1s = [m["f1"] for m in subsets.values() if m["f1"] is not None]
    totals = {key: sum(m[key] for m in subsets.values())
              for key in ("items", "parse_failures", "request_errors", "calls", "prompt_tokens", "completion_tokens")}
    totals["seconds"] = round(sum(m["seconds"] for m in subsets.values()), 2)
    return {"mean_f1": round(sum(f1s) / len(f1s), 2) if f1s else None, "subsets": subsets, "total": totals}


def _judge_all(judging: Judging, items: list[Item], write: Callable[[Item, Verdict], None]) -> None:
    """Judge `items` through the judging core, `BATCH` to a job, and `write` each verdict as it comes. Items are
    judged whatever the scope (they have no outcome grade and no group). A failure of the service is raised once
    the answers of the requests already in flight are in and written."""
    jobs = (judging.job([Row(x.problem, None, group=("item", start + k), columns=x.columns, steps=x.steps)
                         for k, x in enumerate(items[start:start + BATCH])], shard=Shard(start, "", 0),
                        on_verdict=lambda k, v, start=start: write(items[start + k], v))
            for start in range(0, len(items), BATCH))
    for _ in judging.stream(jobs):
        pass


def _verdict(record: dict) -> Verdict:
    return Verdict(record["prediction"], record["status"], record.get("raw"), calls=record.get("calls", 0),
                   prompt_tokens=record.get("prompt_tokens"), completion_tokens=record.get("completion_tokens"))


def _wall_seconds(records: list[dict]) -> float:
    """The time spent judging a subset, summed over the runs that judged part of it."""
    runs: dict[int, float] = {}
    for r in records:
        runs[r.get("run", 0)] = max(runs.get(r.get("run", 0), 0.0), r.get("elapsed") or 0.0)
    return round(sum(runs.values()), 2)
