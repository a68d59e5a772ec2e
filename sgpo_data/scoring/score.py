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
from sgpo_data.schema import SCORE_FIELDS, JudgeStatus, require_columns
from sgpo_data.scoring.advantages import group_advantages, group_moments
from sgpo_data.scoring.rewards import REWARD_MAPS, compute_rts

NEEDED = ["prompt_id", "is_correct", "steps", "first_error_step", "judge_status"]


def _bools(col: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(col, False).to_numpy(zero_copy_only=False).astype(bool)


def _group_codes(table: pa.Table) -> np.ndarray:
    pid = table["prompt_id"]
    if pid.null_count:
        raise SgpoError(f"score: {pid.null_count} row(s) have a null prompt_id; every row needs its group's id")
    return pc.dictionary_encode(pid.combine_chunks()).indices.to_numpy(zero_copy_only=False)


def _row(table: pa.Table, i: int) -> str:
    sample = table["sample_idx"][i].as_py() if "sample_idx" in table.column_names else f"row {i}"
    return f"prompt_id={table['prompt_id'][i].as_py()!r} sample_idx={sample}"


def _require_finite(table: pa.Table, name: str, values: np.ndarray, where: np.ndarray) -> None:
    bad = np.flatnonzero(where & ~np.isfinite(values))
    if bad.size:
        raise SgpoError(f"score: column {name} is not finite ({values[bad[0]]}) at {_row(table, int(bad[0]))} "
                        f"and {bad.size - 1} more row(s); check the reward map settings and the judged input")


def score_table(table: pa.Table, cfg: ScoreConfig) -> pa.Table:
    """Add rts, reward, reward_outcome, advantage, advantage_grpo and group_all_negative (SCORE_FIELDS)."""
    require_columns(table, NEEDED, "score", "score needs the judge stage's output (steps, first_error_step, judge_status)")
    groups = _group_codes(table)
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

    rts = compute_rts(k, n_steps, correct, judged)
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
        "advantage": group_advantages(reward, groups, cfg.eps),
        "advantage_grpo": group_advantages(outcome, groups, cfg.eps),
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


def score_stats(table: pa.Table) -> dict:
    """Counters for the manifest and the dataset card; plain ints/floats (None where undefined)."""
    require_columns(table, ["prompt_id", "is_correct", "judge_status", *[f.name for f in SCORE_FIELDS]],
                    "score_stats", "pass the output of score_table")
    groups = _group_codes(table)
    n = table.num_rows
    correct = int(_bools(table["is_correct"]).sum())
    graded = n - table["is_correct"].null_count
    zero_std, ngroups = {}, 0
    for name, col in (("grpo", "reward_outcome"), ("sgpo", "reward")):
        _, counts, _, std = group_moments(table[col].to_numpy(zero_copy_only=False), groups)
        ngroups = len(counts)
        zero_std[f"zero_std_groups_{name}"] = _share((std == 0).sum(), ngroups)  # a group of one counts
    first_of_group = np.unique(groups, return_index=True)[1]
    rts_mean = pc.mean(table["rts"]).as_py()
    reward_mean = pc.mean(table["reward"]).as_py()
    return {
        "prompts": ngroups,
        "responses": n,
        "graded": graded,
        "accuracy": _share(correct, graded),
        "accuracy_all": _share(correct, n),
        "all_negative_groups": int(_bools(table["group_all_negative"])[first_of_group].sum()),
        **zero_std,
        "judged": int(pc.sum(pc.equal(table["judge_status"], JudgeStatus.OK)).as_py() or 0),
        "judge_parse_errors": int(pc.sum(pc.equal(table["judge_status"], JudgeStatus.PARSE_ERROR)).as_py() or 0),
        "mean_reward": None if reward_mean is None else float(reward_mean),
        "mean_rts": None if rts_mean is None else float(rts_mean),
    }
