"""How well does a step judge find the first wrong step? ProcessBench's measure, on ProcessBench-format data.

Each item is a solution already cut into steps, with the 0-based index of its earliest wrong step (`label`, -1:
none). Per subset: the accuracy on the erroneous items (the exact step), the accuracy on the correct ones
(answering -1), and their harmonic mean F1, in percent as ProcessBench reports them; the unweighted mean F1 over
subsets; where predictions fall against the truth (early, exact, late, missed); parse failures; and the cost.

Data: the Hub id `Qwen/ProcessBench` (its four splits), a folder of `<subset>.json`/`.jsonl` files, or one JSON or
JSONL file of `{id, problem, steps, label, final_answer_correct}` (one subset, named after the file).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sgpo_data.errors import SgpoError
from sgpo_data.judges.base import Judge, JudgeInput, Verdict
from sgpo_data.schema import JudgeStatus

SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
HUB_ID = "Qwen/ProcessBench"


@dataclass(frozen=True)
class Item:
    id: str
    problem: str
    steps: list[str]
    label: int
    columns: dict  # every field of the item (a labels judge reads its column from here)


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
        items.append(Item(str(row.get("id", index)), row["problem"], steps, label, row))
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


def evaluate(judge: Judge, data: dict[str, list[Item]], max_in_flight: int = 8,
             on_subset: Callable[[str, dict], None] = lambda name, m: None) -> tuple[dict, list[dict]]:
    """Judge every item of every subset (reference-free: ProcessBench has no reference solutions). Returns the
    metrics and one prediction record per item."""
    subsets, predictions = {}, []
    for name, items in data.items():
        for column in judge.columns:
            if items and not any(column in x.columns for x in items):
                raise SgpoError(f"{name}: no item has the column {column!r} the judge reads (judge.options.column); "
                                f"the items have: {', '.join(items[0].columns)}")
        inputs = [JudgeInput(x.problem, None, x.steps, columns={c: x.columns.get(c) for c in judge.columns})
                  for x in items]
        started = time.perf_counter()
        verdicts = judge.judge(inputs, max_in_flight)
        seconds = time.perf_counter() - started
        if failure := next((v for v in verdicts if not isinstance(v, Verdict)), None):
            raise failure  # the service failed: stop with its one line
        subsets[name] = {**metrics([x.label for x in items], verdicts), "seconds": round(seconds, 2)}
        on_subset(name, subsets[name])
        predictions += [{"subset": name, "id": x.id, "label": x.label, "prediction": v.first_error_step,
                         "status": v.status, "raw": v.raw, "judge": v.judge, "calls": v.calls,
                         "prompt_tokens": v.prompt_tokens, "completion_tokens": v.completion_tokens,
                         "seconds": round(v.seconds, 4), "error": v.error} for x, v in zip(items, verdicts)]
    f1s = [m["f1"] for m in subsets.values() if m["f1"] is not None]
    totals = {key: sum(m[key] for m in subsets.values())
              for key in ("items", "parse_failures", "request_errors", "calls", "prompt_tokens", "completion_tokens")}
    totals["seconds"] = round(sum(m["seconds"] for m in subsets.values()), 2)
    return {"mean_f1": round(sum(f1s) / len(f1s), 2) if f1s else None, "subsets": subsets, "total": totals}, predictions
