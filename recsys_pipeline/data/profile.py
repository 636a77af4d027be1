"""Summaries of rating tables that a person reads: counts, density, date ranges, activity."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import schema as S


def table_summary(
    table: pa.Table, user_col: str = S.USER_IDX, item_col: str = S.ITEM_IDX
) -> dict[str, object]:
    """Rows, distinct users and items, density (rows / users x items) and the date range."""
    users = pc.count_distinct(table[user_col]).as_py() if table.num_rows else 0
    items = pc.count_distinct(table[item_col]).as_py() if table.num_rows else 0
    out: dict[str, object] = {
        "rows": table.num_rows,
        "users": users,
        "items": items,
        "density": round(table.num_rows / (users * items), 6) if users and items else 0.0,
    }
    if S.TIMESTAMP in table.column_names and table.num_rows:
        lo, hi = pc.min_max(table[S.TIMESTAMP]).values()
        out["first"] = f"{lo.as_py():%Y-%m-%d}"
        out["last"] = f"{hi.as_py():%Y-%m-%d}"
    return out


def split_summary(tables: Mapping[str, pa.Table]) -> list[dict[str, object]]:
    """One :func:`table_summary` row per split table, named in column ``split``."""
    return [{"split": name, **table_summary(t)} for name, t in tables.items()]


def counts_per(table: pa.Table, column: str) -> np.ndarray:
    """Number of rows of each distinct value of ``column`` (e.g. ratings per user)."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    return pc.value_counts(table[column]).field("counts").to_numpy()


def log_bins(counts: np.ndarray, n_bins: int = 20) -> tuple[list[str], list[int]]:
    """Histogram of positive counts over log-spaced bins; labels are the bins' lower edges."""
    if counts.size == 0:
        return [], []
    hi = max(int(counts.max()), 2)
    edges = np.unique(np.geomspace(1, hi + 1, n_bins + 1).astype(np.int64))
    hist, _ = np.histogram(counts, bins=edges)
    return [str(e) for e in edges[:-1]], hist.tolist()


def percentiles(
    values: np.ndarray,
    qs: tuple[int, ...] = (0, 10, 50, 90, 99, 100),
) -> dict[str, float]:
    """Named percentiles (``p50``...) of ``values``; empty input gives an empty mapping."""
    if values.size == 0:
        return {}
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}
