"""The score stage's table function: rewards, RTS and GRPO/SGPO advantages added as columns.

Column operations only (pyarrow compute + numpy), no per-row Python. Conventions:
- a response is *wrong* unless `is_correct` is True (null, ungradable, counts as wrong, as in GRPO);
- partial credit needs `judge_status == 'ok'` and a non-null `first_error_step`; every other wrong row
  (parse_error, error, not judged) keeps the outcome reward 0;
- `rts` is filled for every judged wrong row, also where scope='all_negative_groups' withholds the credit.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.config import ScoreConfig
from sgpo_data.errors import SgpoError
from sgpo_data.schema import SCORE_FIELDS, JudgeStatus, group_codes, require_columns
from sgpo_data.scoring.advantages import group_advantages, group_moments
from sgpo_data.scoring.rewards import REWARD_MAPS, compute_rts

NEEDED = ["prompt_id", "is_correct", "steps", "first_error_step", "judge_status"]


def _bools(col: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(col, False).to_numpy(zero_copy_only=False).astype(bool)


def _row(table: pa.Table, i: int) -> str:
    sample = table["sample_idx"][i].as_py() if "sample_idx" in table.column_names else f"row {i}"
    return f"prompt_id={table['prompt_id'][i].as_py()!r} sample_idx={sample}"


def _require_finite(table: pa.Table, name: str, values: np.ndarray, where: np.ndarray) -> None:
    bad = np.flatnonzero(where & ~np.isfinite(values))
    if bad.size:
        raise SgpoError(f"score: column {name} is not finite ({values[bad[0]]}) at {_row(table, int(bad[0]))} "
                        f"and {bad.size - 1} more row(s); check the reward map settings and the judged input")


def step_weights(steps: pa.ChunkedArray, variant: str, tokenizer=None) -> tuple[np.ndarray, np.ndarray]:
    """Flat per-step weights and list offsets of the `steps` column: 1 per step, characters, or tokens."""
    steps = steps.combine_chunks() if isinstance(steps, pa.ChunkedArray) else steps
    steps = pc.fill_null(steps, pa.scalar([], steps.type))
    offsets = steps.offsets.to_numpy() - steps.offsets[0].as_py()
    flat = steps.flatten()
    if variant == "steps":
        weights = np.ones(len(flat))
    elif variant == "chars":
        weights = pc.utf8_length(flat).to_numpy(zero_copy_only=False).astype(np.float64)
    elif variant == "tokens":
        if tokenizer is None:
            raise SgpoError("score.rts=tokens needs a tokenizer; set score.tokenizer or generate.model")
        ids = tokenizer(flat.to_pylist(), add_special_tokens=False)["input_ids"] if len(flat) else []
        weights = np.array([len(x) for x in ids], dtype=np.float64)
    else:
        raise SgpoError(f"unknown rts variant {variant!r}; valid names: steps, chars, tokens")
    return weights, offsets


def score_table(table: pa.Table, cfg: ScoreConfig, tokenizer=None,
                batch_std: tuple[float, float] | None = None) -> pa.Table:
    """Add rts, reward, reward_outcome, advantage, advantage_grpo and group_all_negative (SCORE_FIELDS).

    `tokenizer` (a transformers tokenizer) is needed only for `cfg.rts == "tokens"`; `batch_std` (of `reward`,
    of `reward_outcome`) only for `cfg.advantage == "batch"` when the table is a part of the batch."""
    require_columns(table, NEEDED, "score", "score needs the judge stage's output (steps, first_error_step, judge_status)")
    groups = group_codes(table, "score")
    correct = _bools(table["is_correct"])
    fes = table["first_error_step"]
    judged = _bools(pc.equal(table["judge_status"], JudgeStatus.OK)) & _bools(pc.is_valid(fes))
    k = pc.fill_null(fes, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    n_steps = pc.fill_null(pc.list_value_length(table["steps"]), 0).to_numpy(zero_copy_only=False).astype(np.int64)

    wrong_judged = judged & ~correct
    out_of_range = np.flatnonzero(wrong_judged & ((k < -1) | (k >= n_steps) | (n_steps == 0)))
    if out_of_range.size:
        i = int(out_of_range[0])
        raise SgpoError(f"score: first_error_step {k[i]} is outside -1..{n_steps[i] - 1} (the response has "
                        f"{n_steps[i]} steps) at {_row(table, i)}; re-run the judge on this row")

    weights, offsets = step_weights(table["steps"], cfg.rts, tokenizer)
    rts = compute_rts(k, weights, offsets, wrong_judged, cfg.no_error_rule)
    wrong_judged &= ~np.isnan(rts)  # no_error_rule='no_credit' takes these rows out of partial credit
    _require_finite(table, "rts", rts, wrong_judged)

    outcome = correct.astype(np.float64)
    all_negative = (np.bincount(groups, weights=outcome) == 0)[groups]
    credited = wrong_judged & (all_negative if cfg.scope == "all_negative_groups" else True)
    reward = outcome.copy()
    reward[credited] = REWARD_MAPS.get(cfg.reward_map, cfg=cfg)(rts[credited])
    _require_finite(table, "reward", reward, np.ones(len(reward), dtype=bool))

    columns = {
        "rts": rts,
        "reward": reward,
        "reward_outcome": outcome,
        "advantage": group_advantages(reward, groups, cfg.eps, cfg.advantage, cfg.std_floor,
                                      batch_std and batch_std[0]),
        "advantage_grpo": group_advantages(outcome, groups, cfg.eps, cfg.advantage, cfg.std_floor,
                                           batch_std and batch_std[1]),
        "group_all_negative": all_negative,
    }
    # Re-scoring (e.g. with another reward map) replaces the previous score columns.
    table = table.drop_columns([f.name for f in SCORE_FIELDS if f.name in table.column_names])
    for field in SCORE_FIELDS:
        mask = ~wrong_judged if field.name == "rts" else None
        table = table.append_column(field, pa.array(columns[field.name], type=field.type, mask=mask))
    return table


def _share(count: float, total: int) -> float | None:
    return float(count) / total if total else None


HIST_BINS = np.linspace(0.0, 1.0, 11)


def _histogram_tally(values: np.ndarray) -> dict:
    values = values[np.isfinite(values)]
    counts, _ = np.histogram(values, bins=HIST_BINS)
    return {"counts": counts.tolist(), "n": int(values.size), "sum": float(values.sum())}


def _histogram(tally: dict) -> dict:
    return {"bins": HIST_BINS.round(2).tolist(), "counts": tally["counts"], "n": tally["n"],
            "mean": tally["sum"] / tally["n"] if tally["n"] else None}


def _group_tally(table: pa.Table) -> dict:
    groups = group_codes(table, "score")
    counts = {"responses": table.num_rows, "graded": table.num_rows - table["is_correct"].null_count,
              "correct": int(_bools(table["is_correct"]).sum()),
              "reward_sum": float(pc.sum(table["reward"]).as_py() or 0.0)}
    for name, col in (("grpo", "reward_outcome"), ("sgpo", "reward")):
        _, sizes, _, std = group_moments(table[col].to_numpy(zero_copy_only=False), groups)
        counts[f"zero_std_groups_{name}"] = int((std == 0).sum())  # a group of one counts
    first_of_group = np.unique(groups, return_index=True)[1]
    counts["prompts"] = len(first_of_group)
    counts["all_negative_groups"] = int(_bools(table["group_all_negative"])[first_of_group].sum())
    return counts


def _group_stats(counts: dict) -> dict:
    n, prompts = counts["responses"], counts["prompts"]
    return {
        "prompts": prompts,
        "responses": n,
        "graded": counts["graded"],
        "accuracy": _share(counts["correct"], counts["graded"]),
        "accuracy_all": _share(counts["correct"], n),
        "all_negative_groups": counts["all_negative_groups"],
        "zero_std_groups_grpo": _share(counts["zero_std_groups_grpo"], prompts),
        "zero_std_groups_sgpo": _share(counts["zero_std_groups_sgpo"], prompts),
        "mean_reward": _share(counts["reward_sum"], n),
    }


def score_tally(table: pa.Table) -> dict:
    """Counters of scored rows that add up across shards (`sgpo_data.stats.add_nested`); `score_summary` turns
    their sum into the statistics."""
    require_columns(table, ["prompt_id", "is_correct", "judge_status", "steps", "first_error_step",
                            *[f.name for f in SCORE_FIELDS]], "score_stats", "pass the output of score_table")
    status = table["judge_status"]
    wrong = ~_bools(table["is_correct"])
    judged_ok = _bools(pc.equal(status, JudgeStatus.OK))
    failed = _bools(pc.is_in(status, pa.array([JudgeStatus.PARSE_ERROR, JudgeStatus.ERROR])))
    k = pc.fill_null(table["first_error_step"], -2).to_numpy(zero_copy_only=False).astype(np.float64)
    n_steps = pc.list_value_length(table["steps"]).to_numpy(zero_copy_only=False).astype(np.float64)
    found = judged_ok & wrong & (k >= 0)
    counts = {
        **_group_tally(table),
        "judged": int(judged_ok.sum()),
        "judge_parse_errors": int(_bools(pc.equal(status, JudgeStatus.PARSE_ERROR)).sum()),
        "judge_errors": int(_bools(pc.equal(status, JudgeStatus.ERROR)).sum()),
        "judge_failed_outcome_reward": int((failed & wrong).sum()),  # wrong rows left at the plain reward 0
        "no_error_found": int((judged_ok & wrong & (k == -1)).sum()),
        "distributions": {
            "rts": _histogram_tally(table["rts"].to_numpy(zero_copy_only=False).astype(np.float64)),
            "first_error_relative": _histogram_tally(np.where(found, k / np.maximum(n_steps, 1), np.nan)),
            "reward": _histogram_tally(table["reward"].to_numpy(zero_copy_only=False).astype(np.float64)),
        },
    }
    if "data_source" in table.column_names:
        sources = pc.fill_null(table["data_source"], "unknown")
        counts["by_source"] = {source: _group_tally(table.filter(pc.equal(sources, source)))
                               for source in sorted(pc.unique(sources).to_pylist())}
    return counts


def score_summary(counts: dict) -> dict:
    """Counters for the manifest, the summary and the dataset card, from summed `score_tally`s; plain ints/floats
    (None where undefined).

    Beside the group counts: how judging went, histograms (10 bins over [0, 1]) of RTS, of the first error's
    position relative to the number of steps (k/K, for judged wrong responses where the judge found an
    error) and of rewards, and the group counts per `data_source`."""
    distributions = counts["distributions"]
    stats = {
        **_group_stats(counts),
        **{key: counts[key] for key in ("judged", "judge_parse_errors", "judge_errors",
                                        "judge_failed_outcome_reward", "no_error_found")},
        "mean_rts": distributions["rts"]["sum"] / distributions["rts"]["n"] if distributions["rts"]["n"] else None,
        "distributions": {name: _histogram(tally) for name, tally in distributions.items()},
    }
    if "by_source" in counts:
        stats["by_source"] = {source: _group_stats(c) for source, c in sorted(counts["by_source"].items())}
    return stats


def score_stats(table: pa.Table) -> dict:
    """The statistics of one table of scored rows (`score_summary` of its tally)."""
    return score_summary(score_tally(table))
