"""The Hugging Face dataset card of an exported SGPO run, rendered from `data_cards/sgpo_dataset_card.md.j2`.

The YAML front matter is built here as a dict and dumped with PyYAML (never templated by hand), so it is
always valid YAML; the Markdown body is the template's. Every number comes from the run's manifests through
the formatting helpers of `sgpo_data.report`. The rendered card is scanned for token-shaped strings and
refused if one is found: a card is public.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

from sgpo_data.errors import SgpoError
from sgpo_data.pipeline.folder import hash_json
from sgpo_data.report import (
    PLOTS,
    SOURCE_COLUMNS,
    check_no_secrets,
    config_summary,
    read_manifests,
    read_scored,
    reward_formula,
    source_rows,
    stat_rows,
)

TEMPLATE = Path(importlib.util.find_spec("sgpo_data_cards").submodule_search_locations[0]) / "sgpo_dataset_card.md.j2"
TASK_CATEGORIES = ["reinforcement-learning", "text-generation"]  # both valid Hub task ids
TAGS = ["sgpo", "grpo", "reasoning", "math", "process-supervision"]
_SIZE_BUCKETS = [  # the Hub's size_categories, by upper bound
    (10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K"), (10**6, "100K<n<1M"), (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"), (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
]
VIEW_DOCS = {
    "flat": "every contract column, one row per rollout",
    "grouped": "one row per prompt; responses, rewards and advantages as lists",
    "prompts": "one row per prompt for online trainers (TRL's GRPOTrainer with sgpo_data's SGPOReward, or its "
               "accuracy_reward): prompt (chat messages), solution (reference answer), reference_solution, pass_rate",
    "trl": "prompt / completion / advantage / reward, one row per rollout, for an offline policy-gradient trainer "
           "(`sgpo-data train`); the chat style leaves out responses cut at the token limit",
    "verl": "verl's RL parquet, one row per prompt: data_source, prompt (chat messages), ability, reward_model "
            "(ground_truth), extra_info (problem, reference_solution); score with sgpo_data.integrations.verl",
    "stepwise": "stepwise supervision for process reward models: prompt, completions (the steps), labels (true "
                "before the first error), separators (the whitespace between steps); read by TRL's PRMTrainer "
                "(TRL < 1.16) and PRM fine-tuning scripts",
}
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)


def size_category(num_rows: int) -> str:
    return next((name for bound, name in _SIZE_BUCKETS if num_rows < bound), "n>1T")


def loadable_views(rows: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    """The views and splits a card can offer, from the export's rows per view and split: `datasets` cannot load a
    split without rows ("corresponds to no data"), so such splits, and views left without one, are left out."""
    views = {view: [split for split, n in splits.items() if n] for view, splits in rows.items()}
    return {view: splits for view, splits in views.items() if splits}


def _configs(views: dict[str, list[str]], identity: str | None) -> list[dict]:
    """One config per view, the first the default (what `load_dataset(repo)` loads without a config name).

    `datasets` caches a local folder under its name (`export` for every run) and a hash of the configs as the
    YAML writes them (the data_files patterns, never the files), so every export would share one cache entry
    and load the rows of whichever was loaded first. A config's description is part of that hash: the export's
    `identity` in it gives each export its own entry."""
    if not views:
        raise SgpoError("render_card needs at least one exported view (e.g. {'flat': ['train', 'test']})")
    configs = []
    for view, splits in views.items():
        if not splits or "/" in view:
            raise SgpoError(f"render_card: view {view!r} needs a plain name and at least one split, got {splits!r}")
        files = [{"split": s, "path": f"{view}/{s}-*.parquet"} for s in splits]
        described = {"description": f"the {view} view of sgpo-data export {identity[:16]}"} if identity else {}
        configs.append({"config_name": view, "data_files": files, **described,
                        **({"default": True} if not configs else {})})
    return configs


def _yaml_block(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False).rstrip()


def render_card(
    run: str | Path,
    views: dict[str, list[str]],
    plots: dict[str, str] | None = None,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    num_rows: int | None = None,
    export_counts: dict | None = None,
    language: list[str] | None = None,
    identity: str | None = None,
) -> str:
    """The README.md of the dataset: Hub YAML metadata, then the Markdown description of the run.

    `repo_id` (owner/name, known at push time) titles the card and its loading snippets; `views` maps each
    exported view to its splits (`{view}/{split}-*.parquet` in the repo), the first being the default config;
    `plots` maps a plot's stem (see `report.PLOTS`) to its path relative to the card; `num_rows` (default: the
    run's scored rollouts) picks the size category; `export_counts` (the export stage's counters) adds how many
    rows in error, and how many responses cut at the token limit, were left out of the views; `identity` (what
    an export's views were made from, see `_configs`) keeps `datasets` from serving another export's rows from
    its cache. Raises SgpoError when the run is incomplete or the card would contain a token-shaped string."""
    import jinja2

    manifests = read_manifests(run)
    stats = manifests["score"]["statistics"]
    rows = manifests["score"]["rows"] if num_rows is None else num_rows
    front = {
        "license": license,
        "language": list(language or ["en"]),
        "pretty_name": repo_id.split("/")[-1] if repo_id else "SGPO dataset",
        "task_categories": TASK_CATEGORIES,
        "tags": TAGS,
        "size_categories": [size_category(rows)],
        "configs": _configs(views, identity),
    }
    table = read_scored(run, ["policy_model", "judge_model"])
    data = manifests["generate"]["config"].get("data", {})
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters["cell"] = lambda value: str(value).replace("|", "\\|")
    text = env.get_template(TEMPLATE.name).render(
        front_matter=_yaml_block(front),
        title=repo_id or "SGPO dataset",
        repo_id=repo_id,
        views={view: (splits, VIEW_DOCS.get(view, "")) for view, splits in views.items()},
        first_view=next(iter(views)),
        rows=rows,
        left_out=(export_counts or {}).get("rows_in_error_left_out", 0),
        truncated_left_out=(export_counts or {}).get("truncated_left_out_of_chat_views", 0),
        summary=config_summary(manifests, table),
        stage_configs={s: _yaml_block(m["config"]) for s, m in manifests.items()},
        reward_formula=reward_formula(manifests["score"]["config"].get("score", {})),
        stats=stat_rows(stats),
        source_header=SOURCE_COLUMNS,
        sources=source_rows(stats),
        zero_std={k: stats.get(f"zero_std_groups_{k}") for k in ("grpo", "sgpo")},
        plots=[(PLOTS.get(stem, stem), path) for stem, path in (plots or {}).items()],
        synthetic=data.get("source") == "arithmetic",
        version=manifests["score"].get("sgpo_data_version"),
    )
    check_no_secrets(text, "dataset card")
    return text


def card_metadata(card_text: str) -> dict:
    """The card's YAML front matter, parsed back."""
    match = _FRONT_MATTER.match(card_text)
    if match is None:
        raise SgpoError("dataset card: no YAML front matter (a '---' block at the very top)")
    return yaml.safe_load(match.group(1))


def render_for_push(export_folder: str | Path, repo_id: str) -> str | None:
    """The card of an export folder rendered again with the repo id it is pushed to (title, pretty_name,
    loading snippet); None when the folder is not the `export/` of a run (then the card is pushed as it is)."""
    from sgpo_data.run_reader import StageFiles

    folder = Path(export_folder)
    export = StageFiles(folder.parent, "export")
    if folder.name != "export" or not export.is_complete():
        return None
    manifest = export.manifest()
    counts = manifest["statistics"]["export"]
    config = manifest["config"]["export"]
    plots = {stem: f"plots/{stem}.png" for stem in PLOTS if (folder / "plots" / f"{stem}.png").is_file()}
    # the identity the export gave its card; a manifest without one: the export's record and config
    identity = counts.get("views_identity") or hash_json([manifest["output_fingerprint"], config])
    return render_card(folder.parent, loadable_views(counts["views"]), plots, repo_id=repo_id,
                       license=config["license"], export_counts=counts, language=config.get("language"),
                       identity=identity)
