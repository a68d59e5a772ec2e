"""Train/test split by prompt: all samples of a prompt_id land in the same split, chosen by a seed."""

from __future__ import annotations

import numbers

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sgpo_data.errors import SgpoError


def n_test_prompts(test_size: float | int, n_prompts: int) -> int:
    """How many prompts go to test: an int as given, a float as round(test_size * n_prompts)."""
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise SgpoError(f"export split: test_size={test_size!r} must be a share (0 <= float < 1) "
                        "or a prompt count (int)")
    if isinstance(test_size, numbers.Integral):
        if not 0 <= test_size < max(n_prompts, 1):
            raise SgpoError(f"export split: test_size={test_size} prompts must be in 0..{n_prompts - 1} (the run has "
                            f"{n_prompts} prompts and train keeps at least one); lower test_size")
        return int(test_size)
    if not 0 <= test_size < 1:
        raise SgpoError(f"export split: test_size={test_size} must be a share in [0, 1) or an int count of prompts")
    n_test = round(test_size * n_prompts)
    if test_size > 0 and not 0 < n_test < n_prompts:
        raise SgpoError(f"export split: test_size={test_size} of {n_prompts} prompts gives {n_test} test prompts, "
                        "leaving one split empty; pick a share that gives 1..n-1 prompts or pass an int count")
    return n_test


def choose_test_prompts(prompt_ids: pa.Array | pa.ChunkedArray, test_size: float | int, seed: int) -> pa.Array:
    """The prompt_ids that go to test: the first ones of a numpy permutation (seeded) of the sorted unique ids,
    so the choice depends only on the set of prompts and the seed, not on row order."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise SgpoError(f"export split: seed={seed!r} must be an integer")
    if prompt_ids.null_count:
        raise SgpoError(f"export split: {prompt_ids.null_count} row(s) have a null prompt_id; every row needs its "
                        "group's id")
    ids = pc.unique(prompt_ids)
    ids = ids.take(pc.sort_indices(ids))
    n_test = n_test_prompts(test_size, len(ids))
    return ids.take(pa.array(np.random.default_rng(seed).permutation(len(ids))[:n_test], pa.int64()))


def split_on(table: pa.Table, test_ids: pa.Array | None) -> dict[str, pa.Table]:
    """{"train": ..., "test": ...} by membership of prompt_id in `test_ids` ({"train"} alone when it is None).
    Rows keep their order."""
    if test_ids is None:
        return {"train": table}
    is_test = pc.is_in(table["prompt_id"], value_set=test_ids)
    return {"train": table.filter(pc.invert(is_test)), "test": table.filter(is_test)}


def split_by_prompt(table: pa.Table, test_size: float | int, seed: int) -> dict[str, pa.Table]:
    """{"train": ..., "test": ...} with whole prompts in each ({"train"} alone when test_size is 0); see
    `choose_test_prompts` for which prompts go to test."""
    if "prompt_id" not in table.column_names:
        raise SgpoError("export split: missing column prompt_id; split the output of a stage (generate or later)")
    test_ids = choose_test_prompts(table["prompt_id"], test_size, seed)
    return split_on(table, test_ids if len(test_ids) else None)
