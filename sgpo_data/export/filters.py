"""Filters applied at export. Nothing is dropped silently: each filter's removed-row count comes back.

Every keep-mask is computed on the input table (group filters see whole groups, so their verdict does
not depend on the row filters), then the filters are counted in a fixed order: a row is charged to the
first enabled filter that removes it, so the counts add up to the rows removed.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from sgpo_data.errors import SgpoError
from sgpo_data.schema import require_columns

ADVANTAGE_COLUMNS = ("advantage", "advantage_grpo")


def apply_filters(
    table: pa.Table,
    *,
    drop_zero_advantage_groups: bool = False,
    only_all_negative: bool = False,
    min_response_tokens: int | None = None,
    max_response_tokens: int | None = None,
    dedupe_within_group: bool = False,
    column: str = "advantage",
) -> tuple[pa.Table, dict[str, int]]:
    """Keep the rows every enabled filter keeps; return them and {filter name: rows it removed}.

    - only_all_negative: keep groups where no response is correct (`group_all_negative`).
    - drop_zero_advantage_groups: drop groups whose `column` (advantage or advantage_grpo) is zero (or
      null) for every row: they carry no gradient.
    - min/max_response_tokens: inclusive bounds on `response_tokens`; a null length fails a bound.
    - dedupe_within_group: of identical response strings within a prompt's group keep the lowest
      sample_idx; null responses are kept.
    Only enabled filters appear in the counts."""
    if column not in ADVANTAGE_COLUMNS:
        raise SgpoError(f"export filters: unknown advantage column {column!r}; "
                        f"valid names: {', '.join(ADVANTAGE_COLUMNS)}")
    for name, bound in (("min_response_tokens", min_response_tokens), ("max_response_tokens", max_response_tokens)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0):
            raise SgpoError(f"export filters: {name}={bound!r} must be a non-negative integer or unset")
    if None not in (min_response_tokens, max_response_tokens) and min_response_tokens > max_response_tokens:
        raise SgpoError(f"export filters: min_response_tokens={min_response_tokens} is above "
                        f"max_response_tokens={max_response_tokens}; swap or widen the bounds")

    length = pl.col("response_tokens")
    filters = {  # name -> (enabled, columns needed, keep expression); the order is the counting order
        "only_all_negative": (only_all_negative, ["group_all_negative"],
                              pl.col("group_all_negative").fill_null(False)),
        "drop_zero_advantage_groups": (drop_zero_advantage_groups, ["prompt_id", column],
                                       (pl.col(column).fill_null(0) != 0).any().over("prompt_id")),
        "min_response_tokens": (min_response_tokens is not None, ["response_tokens"],
                                (length >= (min_response_tokens or 0)).fill_null(False)),
        "max_response_tokens": (max_response_tokens is not None, ["response_tokens"],
                                (length <= (max_response_tokens or 0)).fill_null(False)),
        "dedupe_within_group": (dedupe_within_group, ["prompt_id", "sample_idx", "response"],
                                pl.col("response").is_null()
                                | (pl.col("sample_idx") == pl.col("sample_idx").min().over("prompt_id", "response"))),
    }
    enabled = {name: (cols, expr) for name, (on, cols, expr) in filters.items() if on}
    if not enabled:
        return table, {}
    needed = sorted({c for cols, _ in enabled.values() for c in cols})
    require_columns(table, needed, "export filters",
                    "filters read the score stage's output; run `sgpo-data score` first")

    masks = pl.from_arrow(table.select(needed)).select(
        **{name: expr.fill_null(False) for name, (_, expr) in enabled.items()})
    counts, kept = {}, pl.repeat(True, table.num_rows, eager=True)
    for name in enabled:
        counts[name] = int((kept & ~masks[name]).sum())
        kept = kept & masks[name]
    return table.filter(pa.array(kept.to_numpy())), counts
