"""rich output: progress bars for stages and the closing summary table."""

from __future__ import annotations

import threading
import time

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sgpo_data.pipeline.progress import Progress as StageProgress

console = Console(stderr=True)


class RichProgress(StageProgress):
    """Rich bars on a terminal. When stderr is not a terminal (a log file, a CI job, a Slurm output) the bars
    draw nothing, so a line per task is printed every `every` seconds instead, also while requests are pending."""

    def __init__(self, bar: Progress, every: float = 30.0):
        self.bar = bar
        self._stop = threading.Event()
        if not console.is_terminal:
            threading.Thread(target=self._heartbeat, args=(every,), daemon=True).start()

    def _heartbeat(self, every: float) -> None:
        started = time.monotonic()
        while not self._stop.wait(every):
            for task in self.bar.tasks:
                if not task.finished:
                    console.print(f"{task.description}: {task.completed:.0f}/{task.total:.0f} rows done, "
                                  f"{time.monotonic() - started:.0f} s elapsed", soft_wrap=True)

    def close(self) -> None:
        self._stop.set()

    def task(self, description: str, total: int) -> int:
        return self.bar.add_task(description, total=total, status="")

    def advance(self, task: int, n: int = 1) -> None:
        self.bar.advance(task, n)

    def info(self, task: int, text: str) -> None:
        self.bar.update(task, status=text)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console,
    )


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}" if 0 <= value <= 1 else f"{value:.3f}"
    return str(value)


SUMMARY_ROWS = [
    ("prompts", "prompts"),
    ("responses", "responses"),
    ("accuracy", "accuracy"),
    ("all-negative groups", "all_negative_groups"),
    ("zero-std groups, GRPO", "zero_std_groups_grpo"),
    ("zero-std groups, SGPO", "zero_std_groups_sgpo"),
    ("judged", "judged"),
    ("judge parse failures", "judge_parse_errors"),
    ("rows in error (left out)", "rows_in_error"),
    ("mean reward", "mean_reward"),
]


SPARKS = "▁▂▃▄▅▆▇█"
DISTRIBUTIONS = [("RTS, 10 bins over [0, 1]", "rts"), ("first error / steps", "first_error_relative"),
                 ("reward, 10 bins over [0, 1]", "reward")]


def sparkline(counts: list[int]) -> str:
    top = max(counts) or 1
    return "".join(" " if c == 0 else SPARKS[min(len(SPARKS) - 1, c * len(SPARKS) // (top + 1))] for c in counts)


def summary_table(stats: dict, stage: str, run: str, wall_s: float) -> Table:
    table = Table(title=f"sgpo-data {stage} → {run}")
    table.add_column("")
    table.add_column("value", justify="right")
    for label, key in SUMMARY_ROWS:
        if key in stats:
            value = stats[key]
            table.add_row(label, f"{value:.3f}" if key == "mean_reward" and value is not None else _fmt(value))
    for label, key in DISTRIBUTIONS:
        hist = stats.get("distributions", {}).get(key)
        if hist and hist["n"]:
            table.add_row(label, f"{sparkline(hist['counts'])} mean {hist['mean']:.2f}")
    for label, engine in (("tokens, policy (prompt / completion)", "generate"), ("tokens, judge (prompt / completion)", "judge")):
        if f"{engine}_prompt_tokens" in stats:
            table.add_row(label, f"{stats[f'{engine}_prompt_tokens']:,} / {stats[f'{engine}_completion_tokens']:,}")
    usage = stats.get("usage", {}) if stage == "judge" else {k[6:]: v for k, v in stats.items() if k.startswith("judge_")}
    if "requests" in usage:
        table.add_row("judge cost (calls / tokens / request-s)", f"{usage['requests']:,} / "
                      f"{usage['prompt_tokens'] + usage['completion_tokens']:,} / {usage.get('request_seconds', 0):.1f}")
    found = stats.get("errors_found_by") or stats.get("judge_errors_found_by")
    if found:
        table.add_row("first errors found, by judge", ", ".join(f"{name} {n}" for name, n in found.items()))
    table.add_row("wall time", f"{wall_s:.1f} s")
    return table


def judge_eval_table(result: dict) -> Table:
    """eval-judge's figures: one row per subset, then the mean F1 and the totals."""
    table = Table(title=f"judge {result['judge']['name']} on {result['data']}", box=box.SIMPLE_HEAD, padding=(0, 1))
    for label in ("subset", "items", "err %", "cor %", "F1 %", "early/exact/late/miss", "parse", "calls",
                  "tokens", "s"):
        table.add_column(label, justify="left" if label == "subset" else "right", no_wrap=True)

    def num(value) -> str:
        return "-" if value is None else f"{value:.1f}" if isinstance(value, float) else f"{value:,}"

    for name, m in result["subsets"].items():
        p = m["erroneous_predictions"]
        table.add_row(name, num(m["items"]), num(m["acc_erroneous"]), num(m["acc_correct"]), num(m["f1"]),
                      f"{p['early']}/{p['exact']}/{p['late']}/{p['missed']}", num(m["parse_failures"]),
                      num(m["calls"]), num(m["prompt_tokens"] + m["completion_tokens"]), num(m["seconds"]))
    t = result["total"]
    table.add_row("mean", num(t["items"]), "", "", num(result["mean_f1"]), "", num(t["parse_failures"]),
                  num(t["calls"]), num(t["prompt_tokens"] + t["completion_tokens"]), num(t["seconds"]))
    return table


def source_table(stats: dict) -> Table | None:
    """The group counts per data source, when the run has them."""
    by_source = stats.get("by_source")
    if not by_source:
        return None
    table = Table(title="per data source")
    columns = [("source", None), ("prompts", "prompts"), ("accuracy", "accuracy"),
               ("all-negative", "all_negative_groups"), ("zero-std GRPO", "zero_std_groups_grpo"),
               ("zero-std SGPO", "zero_std_groups_sgpo")]
    for label, _ in columns:
        table.add_column(label, justify="left" if label == "source" else "right")
    for source, row in by_source.items():
        table.add_row(source, *(_fmt(row.get(key)) for _, key in columns[1:]))
    return table


def failed_rows(run, stages: list[str], limit: int = 3) -> list[str]:
    """A few of the rows in error of each stage: which prompt, which kind, the error's first line."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from sgpo_data.run_reader import StageFiles

    lines = []
    for stage in stages:
        files = StageFiles(run, stage)
        status, kind, text = f"{stage}_status", f"{stage}_error_kind", f"{stage}_error"
        parts = [p for i, p in enumerate(files.parts()) if files.read_marker(i)]
        if not parts:
            continue
        table = ds.dataset([str(p) for p in parts]).to_table(columns=["prompt_id", "sample_idx", status, kind, text])
        failed = table.filter(pc.fill_null(pc.equal(table[status], "error"), False))
        for row in failed.slice(0, limit).to_pylist():
            message = (row[text] or "").splitlines()[0][:160] if row[text] else ""
            lines.append(f"{stage}: prompt_id={row['prompt_id']} sample_idx={row['sample_idx']} {row[kind]}: {message}")
        if failed.num_rows > limit:
            lines.append(f"{stage}: … and {failed.num_rows - limit} more (columns {status}, {kind}, {text})")
    return lines
