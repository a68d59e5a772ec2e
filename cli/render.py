"""rich output: progress bars for stages and the closing summary table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sgpo_data.stages.progress import Progress as StageProgress

console = Console(stderr=True)


class RichProgress(StageProgress):
    def __init__(self, bar: Progress):
        self.bar = bar

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
    table.add_row("wall time", f"{wall_s:.1f} s")
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
