"""`sgpo-data report RUN`: plots of what the judge and the reward map did, and a one-page Markdown summary.

Plots are drawn from the scored rows; every number in the summary is the score manifest's statistics, formatted
by `stat_rows`. The dataset card (`sgpo_data.card`) uses the same helpers, so the report, the card and the
manifest cannot disagree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data import run_reader
from sgpo_data.errors import SgpoError
from sgpo_data.schema import error_rows

REPORT_STAGES = ["generate", "judge", "score"]
PLOTS = {  # file stem -> caption
    "reward_distribution": "SGPO reward of wrong vs correct responses",
    "first_error_position": "First error position relative to the number of steps (judged wrong responses)",
    "zero_std_groups": "Share of groups with zero reward std: GRPO vs SGPO",
    "accuracy_by_source": "Accuracy per data source",
    "judge_status": "Judge status counts (parse failures in red)",
}
STAT_MEANINGS = {  # score-manifest key -> meaning, in table order; keys not listed follow, sorted
    "prompts": "prompts (groups)",
    "responses": "responses (rollouts)",
    "graded": "responses the grader could verify",
    "accuracy": "share of graded responses that are correct",
    "accuracy_all": "share of all responses that are correct (ungradable counts as wrong)",
    "all_negative_groups": "groups with no correct response",
    "zero_std_groups_grpo": "share of groups whose outcome rewards are all equal (no GRPO signal)",
    "zero_std_groups_sgpo": "share of groups whose SGPO rewards are all equal (no SGPO signal)",
    "mean_reward": "mean SGPO reward",
    "mean_rts": "mean RTS of judged wrong responses",
    "judged": "responses the judge labelled (judge_status ok)",
    "no_error_found": "judged wrong responses where the judge found no error (first_error_step -1)",
    "judge_parse_errors": "judge outputs that could not be parsed",
    "judge_errors": "judge calls that failed",
    "judge_failed_outcome_reward": "wrong responses left at reward 0 because the judge's answer could not be parsed",
    "rows_in_error": "rows left out of scoring and of every view: their generate or judge request failed",
    "groups_with_rows_in_error": "groups scored over fewer than G rows because some of theirs are in error",
    "generate_requests": "policy requests that produced the responses (one per prompt, plus refills)",
    "generate_prompt_tokens": "policy prompt tokens, counted once per request (not once per sample)",
    "generate_completion_tokens": "policy completion tokens (the responses)",
    "judge_requests": "judge engine requests (a group request counts once; 0 for local judges: arith, labels, prm)",
    "judge_request_seconds": "judge time summed over the rows: each verdict's requests in flight (concurrent ones "
                             "overlap, so this exceeds the wall time), or its local work",
    "judge_prompt_tokens": "judge prompt tokens",
    "judge_completion_tokens": "judge completion tokens (0 when answers are scored by likelihood)",
}
SOURCE_COLUMNS = ["prompts", "responses", "accuracy", "all_negative_groups", "zero_std_groups_grpo",
                  "zero_std_groups_sgpo", "mean_reward"]
_COLUMNS = ["prompt_id", "is_correct", "reward", "judge_status", "first_error_step", "steps", "policy_model",
            "judge_model", "data_source"]
# Hub tokens and OpenAI-style keys; the lookbehind keeps words like "task-..." from matching.
_SECRET = re.compile(r"(?<![A-Za-z0-9])(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})")


# -- reading a run --------------------------------------------------------------------------------------

def read_manifests(run: str | Path) -> dict[str, dict]:
    """The generate, judge and score manifests; SgpoError naming what to run when a stage is incomplete."""
    return run_reader.read_manifests(run, REPORT_STAGES)


def read_scored(run: str | Path, columns: list[str] = _COLUMNS) -> pa.Table:
    """The score stage's rows without the rows in error, only the `columns` it has (the report never needs
    the response texts)."""
    stage = run_reader.StageFiles(run, "score")
    stage.require_complete()
    dataset = stage.dataset()
    present = [c for c in columns if c in dataset.schema.names]
    status = [c for c in ("generate_status", "judge_status") if c in dataset.schema.names and c not in present]
    table = dataset.to_table(columns=present + status)
    keep = ~error_rows(table)
    return table.filter(pa.array(keep)).select(present)


def models(table: pa.Table, column: str) -> str | None:
    if column not in table.column_names:
        return None
    names = sorted(v for v in pc.unique(table[column]).to_pylist() if v is not None)
    return ", ".join(names) or None


# -- formatting (shared with the card) -------------------------------------------------------------------

def check_no_secrets(text: str, where: str) -> None:
    """Refuse text that contains something shaped like a Hub token or an API key, or a URL that carries
    credentials (shown redacted)."""
    from sgpo_data.redaction import find_credentials

    found = _SECRET.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        raise SgpoError(f"{where}: line {line} holds what looks like a secret ({found.group()[:5]}…); "
                        "remove it from the recipe/config the run was made with and re-run the stage")
    for number, line in enumerate(text.splitlines(), 1):
        if (credential := find_credentials(line)) is not None:
            raise SgpoError(f"{where}: line {number} holds {credential}; remove it from the recipe/config the run "
                            "was made with (pass credentials through api_key_env) and re-run the stage")


def format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def stat_rows(stats: dict) -> list[tuple[str, str, str]]:
    """(key, formatted value, meaning) for every scalar statistic; nested ones (distributions, ...) are left out."""
    scalar = [k for k in stats if not isinstance(stats[k], (dict, list))]
    keys = [k for k in STAT_MEANINGS if k in scalar] + sorted(k for k in scalar if k not in STAT_MEANINGS)
    return [(k, format_value(stats[k]), STAT_MEANINGS.get(k, "")) for k in keys]


def source_rows(stats: dict) -> list[list[str]]:
    """One row per data source: the source, then `SOURCE_COLUMNS` formatted."""
    return [[source] + [format_value(s.get(c)) for c in SOURCE_COLUMNS]
            for source, s in sorted(stats.get("by_source", {}).items())]


def _kv(config: dict, keys: list[str]) -> str:
    """`key=value` pairs; a part ({name, options}) shows its name."""
    named = {k: v["name"] if isinstance(v, dict) and "name" in v else v for k, v in config.items()}
    return ", ".join(f"{k}={named[k]}" for k in keys if named.get(k) is not None)


def reward_formula(score: dict) -> str:
    name = score.get("reward_map")
    formulas = {"sigmoid": "sigmoid({beta} * (rts - {gamma}))", "linear": "{alpha} * rts", "step": "{step_credit}"}
    return f"{name}: r = " + formulas[name].format(**score) if name in formulas else str(name)


def config_summary(manifests: dict[str, dict], table: pa.Table | None = None) -> list[tuple[str, str]]:
    """(label, value) lines for the run's configuration; models are read from the rows when given."""
    gen = manifests["generate"]["config"]
    judge = manifests["judge"]["config"].get("judge", {})
    score = manifests["score"]["config"].get("score", {})
    g = gen.get("generate", {})
    policy = (models(table, "policy_model") if table is not None else None) or g.get("model") or "default"
    judge_model = (models(table, "judge_model") if table is not None else None) or judge.get("model") or "default"
    return [
        ("policy model", policy),
        ("sampling", _kv(g.get("sampling", {}), ["num_samples", "temperature", "top_p", "max_new_tokens", "seed"])),
        ("data", _kv(gen.get("data", {}), ["source", "preset", "subset", "split", "limit"])),
        ("grader", _kv(gen.get("grader", {}), ["name", "last_number_fallback"])),
        ("judge model", judge_model),
        ("judge", _kv(judge, ["name", "backend", "segmenter", "scope"])),
        ("reward map", reward_formula(score)),
        ("reward options", _kv(score, ["rts", "no_error_rule", "scope"])),
        ("advantage", f"{score.get('advantage')} ({_kv(score, ['eps', 'std_floor'])})"),
    ]


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------------------------------

def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot: no global backend state is touched

    fig = Figure(figsize=(6, 3.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.title.set_fontsize(10)
    return fig, ax


def _array(table: pa.Table, column: str, fill) -> np.ndarray:
    return pc.fill_null(table[column], fill).to_numpy(zero_copy_only=False)


def make_plots(table: pa.Table, stats: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write the five PNGs of `PLOTS` into `out_dir`; returns file stem -> path. The table has is_correct, reward,
    judge_status, first_error_step, and the steps or their number (`n_steps`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    correct = _array(table, "is_correct", False).astype(bool)  # ungradable counts as wrong, as in scoring
    reward = _array(table, "reward", np.nan).astype(float)
    status = pc.fill_null(table["judge_status"], "none").to_pylist()
    k = _array(table, "first_error_step", -2).astype(float)
    steps = table["n_steps"] if "n_steps" in table.column_names else pc.list_value_length(table["steps"])
    n_steps = pc.fill_null(steps, 0).to_numpy(zero_copy_only=False)
    judged_wrong = (np.asarray(status) == "ok") & ~correct
    figures = {}

    fig, ax = _figure("SGPO reward by outcome", "reward", "responses")
    ax.hist([reward[~correct], reward[correct]], bins=np.linspace(0, 1, 21), stacked=True,
            label=[f"wrong (n={int((~correct).sum())})", f"correct (n={int(correct.sum())})"])
    ax.legend()
    figures["reward_distribution"] = fig

    found = judged_wrong & (k >= 0)
    no_error = int((judged_wrong & (k == -1)).sum())
    fig, ax = _figure(f"First error position, {int(found.sum())} judged wrong responses\n"
                      f"no error found (first_error_step = -1): {no_error}",
                      "first_error_step / number of steps", "responses")
    ax.hist(k[found] / np.maximum(n_steps[found], 1), bins=np.linspace(0, 1, 11))
    ax.set_xlim(0, 1)
    figures["first_error_position"] = fig

    sources = stats.get("by_source", {})
    groups = {"all": stats, **{s: sources[s] for s in sorted(sources)}}
    x = np.arange(len(groups))
    fig, ax = _figure("Groups with zero reward std (no learning signal)", "data source", "share of groups")
    for offset, name in ((-0.2, "grpo"), (0.2, "sgpo")):
        bars = ax.bar(x + offset, [g.get(f"zero_std_groups_{name}") or 0 for g in groups.values()], 0.4,
                      label=name.upper())
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set(xticks=x, xticklabels=list(groups), ylim=(0, 1.15))
    ax.legend()
    figures["zero_std_groups"] = fig

    fig, ax = _figure("Accuracy per data source", "data source", "accuracy (graded responses)")
    bars = ax.bar(x, [g.get("accuracy") or 0 for g in groups.values()])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set(xticks=x, xticklabels=[f"{s}\n({g.get('responses')} responses)" for s, g in groups.items()],
           ylim=(0, 1.1))
    figures["accuracy_by_source"] = fig

    counts = {"ok": 0, "skipped_correct": 0, "parse_error": 0, "error": 0}  # failures shown even at 0
    for value in status:
        counts[value] = counts.get(value, 0) + 1
    fig, ax = _figure(f"Judge status (parse errors: {counts['parse_error']}, errors: {counts['error']})",
                      "responses", "judge_status")
    colors = ["tab:red" if s in ("parse_error", "error") else "tab:blue" for s in counts]
    bars = ax.barh(list(counts), list(counts.values()), color=colors)
    ax.bar_label(bars, fontsize=8)
    ax.invert_yaxis()
    figures["judge_status"] = fig

    paths = {}
    for stem, fig in figures.items():
        paths[stem] = out / f"{stem}.png"
        fig.savefig(paths[stem], dpi=100)
    return paths


# -- the summary ----------------------------------------------------------------------------------------

def write_report(run: str | Path, out_dir: str | Path | None = None) -> Path:
    """Plots plus `report.md` (default `RUN/report/`); returns the Markdown file's path."""
    run = Path(run)
    manifests = read_manifests(run)
    table = read_scored(run)
    stats = manifests["score"]["statistics"]
    out = Path(out_dir) if out_dir is not None else run / "report"
    plots = make_plots(table, stats, out)
    score = manifests["score"]
    lines = [
        f"# SGPO run report: {run.name}",
        "",
        f"Run folder `{run}`, sgpo-data {score.get('sgpo_data_version')}, {score.get('rows')} scored rows. "
        "SGPO (arXiv 2505.11595) gives wrong responses partial credit from the step-wise judge's first error.",
        "",
        "## Configuration",
        "",
        md_table(["setting", "value"], [list(r) for r in config_summary(manifests, table)]),
        "",
        "## Statistics (score manifest)",
        "",
        md_table(["statistic", "value", "meaning"], [[f"`{k}`", v, m] for k, v, m in stat_rows(stats)]),
        "",
    ]
    if stats.get("by_source"):
        lines += ["### Per data source", "", md_table(["source", *SOURCE_COLUMNS], source_rows(stats)), ""]
    lines += ["## Plots", ""]
    for stem, path in plots.items():
        lines += [f"![{PLOTS[stem]}]({Path(os.path.relpath(path, out)).as_posix()})", ""]
    text = "\n".join(lines)
    check_no_secrets(text, "report.md")
    target = out / "report.md"
    target.write_text(text)
    return target
