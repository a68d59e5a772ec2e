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


def split_by_prompt(table: pa.Table, test_size: float | int, seed: int) -> dict[str, pa.Table]:
    """{"train": ..., "test": ...} with whole prompts in each ({"train"} alone when test_size is 0).

    The test prompts are the first ones of a numpy permutation (seeded) of the sorted unique prompt_ids,
    so the split depends only on the set of prompts and the seed, not on row order. Rows keep their order."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise SgpoError(f"export split: seed={seed!r} must be an integer")
    if "prompt_id" not in table.column_names:
        raise SgpoError("export split: missing column prompt_id; split the output of a stage (generate or later)")
    pid = table["prompt_id"].combine_chunks()
    if pid.null_count:
        raise SgpoError(f"export split: {pid.null_count} row(s) have a null prompt_id; every row needs its group's id")
    ids = pc.unique(pid)
    ids = ids.take(pc.sort_indices(ids))
    n_test = n_test_prompts(test_size, len(ids))
    if n_test == 0:
        return {"train": table}
    test_ids = ids.take(pa.array(np.random.default_rng(seed).permutation(len(ids))[:n_test]))
    is_test = pc.is_in(pid, value_set=test_ids)
    return {"train": table.filter(pc.invert(is_test)), "test": table.filter(is_test)}
