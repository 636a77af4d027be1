"""Cleaning of canonical tables: nulls, exact duplicates and duplicate keys, each count reported.

Rules (the same for every release):

* rows with a null in a required column are dropped (counted per column);
* exact duplicate rows are dropped, keeping the first occurrence;
* ratings: when one user rated one item more than once, the latest rating is kept
  (largest timestamp; equal timestamps keep the row that comes last in the file);
* movies, links, users: one row per id, the first in the file is kept.

Row order of what is kept is the input (file) order, which later stages use to break
timestamp ties. Everything is vectorized: hashing in pandas, selection in numpy/pyarrow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import schema as S

log = logging.getLogger(__name__)

# required (non-null) columns and the key that must be unique, per canonical table
REQUIRED: dict[str, tuple[str, ...]] = {
    "ratings": (S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP),
    "movies": (S.ITEM_ID,),
    "tags": (S.USER_ID, S.ITEM_ID, S.TAG),
    "links": (S.ITEM_ID,),
    "users": (S.USER_ID,),
}
KEYS: dict[str, tuple[str, ...] | None] = {
    "ratings": (S.USER_ID, S.ITEM_ID),
    "movies": (S.ITEM_ID,),
    "tags": None,  # a user may put several tags on one movie
    "links": (S.ITEM_ID,),
    "users": (S.USER_ID,),
}


@dataclass
class CleanReport:
    """What cleaning dropped and why: ``dropped`` maps a reason to a row count."""

    table: str
    rows_in: int
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """Flat mapping for metadata: rows in/out and one entry per drop reason."""
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, **self.dropped}


def clean_table(name: str, table: pa.Table) -> tuple[pa.Table, CleanReport]:
    """Clean one canonical table (``ratings``, ``movies``, ``tags``, ``links`` or ``users``).

    Args:
        name: canonical table name; selects the required columns and the unique key.
        table: the table as read from the release, in file order.

    Returns:
        The cleaned table (same schema, file order kept) and a report of dropped rows.
    """
    if name not in REQUIRED:
        raise ValueError(f"unknown table {name!r}; expected one of {sorted(REQUIRED)}")
    report = CleanReport(table=name, rows_in=table.num_rows)
    table = _drop_nulls(table, REQUIRED[name], report)
    key = KEYS[name]
    if key is None:
        exact = _exact_duplicates(table)
        if exact.any():
            report.dropped["exact_duplicate"] = int(exact.sum())
            table = table.filter(pa.array(~exact))
    else:
        table = _dedupe_keyed(name, table, key, report)
    report.rows_out = table.num_rows
    if report.rows_out != report.rows_in:
        log.info(
            "cleaned %s: %d -> %d rows, dropped %s",
            name,
            report.rows_in,
            report.rows_out,
            report.dropped,
        )
    return table, report


def _drop_nulls(table: pa.Table, columns: tuple[str, ...], report: CleanReport) -> pa.Table:
    if table.num_rows == 0:
        return table
    keep = np.ones(table.num_rows, dtype=bool)
    for col in columns:
        valid = pc.is_valid(table[col])
        if pa.types.is_floating(table[col].type):  # NaN is as missing as null
            valid = pc.and_(valid, pc.invert(pc.fill_null(pc.is_nan(table[col]), True)))
        valid_np = valid.to_numpy(zero_copy_only=False).astype(bool)
        if not valid_np.all():
            report.dropped[f"null_{col}"] = int((~valid_np).sum())
            keep &= valid_np
    return table if keep.all() else table.filter(pa.array(keep))


def _exact_duplicates(table: pa.Table) -> np.ndarray:
    """Bool mask of rows equal in every column to an earlier row (lists compared as text)."""
    if table.num_rows < 2:
        return np.zeros(table.num_rows, dtype=bool)
    data = {}
    for col in table.column_names:
        arr = table[col]
        if pa.types.is_list(arr.type):
            arr = pc.binary_join(arr, "\x1f")
        data[col] = arr.to_pandas()
    return pd.DataFrame(data).duplicated(keep="first").to_numpy()


def _key_codes(table: pa.Table, key: tuple[str, ...]) -> np.ndarray:
    """One int64 per row identifying its key (two int32 ids packed into one int64)."""
    if len(key) == 1:
        return table[key[0]].to_numpy().astype(np.int64)
    hi = table[key[0]].to_numpy().astype(np.int64)
    lo = table[key[1]].to_numpy().astype(np.int64) & 0xFFFFFFFF
    return (hi << 32) | lo


def _dedupe_keyed(
    name: str, table: pa.Table, key: tuple[str, ...], report: CleanReport
) -> pa.Table:
    """Drop exact duplicates, then resolve repeated keys; only rows whose key repeats are
    examined beyond one O(n) hash pass, so clean data of any size costs a single pass."""
    codes = _key_codes(table, key)
    # numpy's int64 sort is SIMD-accelerated: ~0.4 s for 25M keys, faster than hashing
    ordered = np.sort(codes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size == 0:
        return table
    rows = np.flatnonzero(np.isin(codes, np.unique(repeated)))
    drop = np.zeros(table.num_rows, dtype=bool)
    exact = _exact_duplicates(table.take(pa.array(rows)))
    if exact.any():
        report.dropped["exact_duplicate"] = int(exact.sum())
        drop[rows[exact]] = True
        rows = rows[~exact]
    if name == "ratings":
        # latest timestamp wins; equal timestamps: the row later in the file wins
        ts = table[S.TIMESTAMP].to_numpy().astype("datetime64[s]").astype(np.int64)[rows]
        order = np.lexsort((rows, ts, codes[rows]))
        reason = "superseded_rating"
    else:  # first row in the file wins: sort by key, then by descending file position
        order = np.lexsort((-rows, codes[rows]))
        reason = f"duplicate_{'_'.join(key)}"
    sorted_codes = codes[rows][order]
    is_last = np.ones(rows.size, dtype=bool)
    is_last[:-1] = sorted_codes[:-1] != sorted_codes[1:]
    if (~is_last).any():
        report.dropped[reason] = int((~is_last).sum())
        drop[rows[order[~is_last]]] = True
    return table.filter(pa.array(~drop))
