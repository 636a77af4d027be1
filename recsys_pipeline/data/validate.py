"""Validators for lake tables. Each returns a list of findings; an empty list means it holds.

The same functions back the Dagster asset checks (which turn findings into check metadata)
and the pure code path (``raise_findings`` turns them into a ``ValueError``), so a property is
tested in one place only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import schema as S

EARLIEST_TIMESTAMP = S.EARLIEST_TIMESTAMP
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Finding:
    """One violated property: how many rows break it, a message naming the column and values,
    and a few offending rows."""

    check: str
    count: int
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)


def raise_findings(findings: Sequence[Finding], where: str) -> None:
    """Raise a ``ValueError`` listing every finding, prefixed with ``where`` (a file or table)."""
    if findings:
        lines = "; ".join(f"[{f.check}] {f.message}" for f in findings)
        raise ValueError(f"{where}: {lines}")


def _examples(table: pa.Table, mask: np.ndarray) -> list[dict[str, Any]]:
    rows = np.flatnonzero(mask)[:MAX_EXAMPLES]
    return table.take(pa.array(rows, type=pa.int64())).to_pylist() if rows.size else []


def check_schema(table: pa.Table, expected: pa.Schema, name: str = "table") -> list[Finding]:
    """Column names, order and types equal ``expected`` (nullability is not compared)."""
    # types compare with DataType.equals: a list's child-field name ("item" when built,
    # "element" after a Parquet round trip) is not part of the type
    got = {f.name: f.type for f in table.schema}
    want = {f.name: f.type for f in expected}
    if table.schema.names == expected.names and all(got[n].equals(want[n]) for n in want):
        return []
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    wrong = [
        f"{n}: {t} (expected {want[n]})"
        for n, t in got.items()
        if n in want and not t.equals(want[n])
    ]
    order = "" if missing or extra or wrong else f" (column order {table.schema.names})"
    msg = (
        f"{name} schema differs: missing {missing}, unexpected {extra}, wrong types {wrong}{order}"
    )
    return [Finding("schema", max(1, len(missing) + len(extra) + len(wrong)), msg)]


def check_no_null_ids(
    table: pa.Table,
    columns: Sequence[str] = (S.USER_ID, S.ITEM_ID),
) -> list[Finding]:
    """No null in any id column."""
    out = []
    for col in columns:
        nulls = pc.is_null(table[col]).to_numpy(zero_copy_only=False)
        if nulls.any():
            out.append(
                Finding(
                    "no_null_ids",
                    int(nulls.sum()),
                    f"column '{col}' has {int(nulls.sum())} null ids",
                    _examples(table, nulls),
                )
            )
    return out


def check_rating_values(table: pa.Table, allowed: Sequence[float]) -> list[Finding]:
    """Every rating is one of the release's ``allowed`` values (e.g. 0.5, 1.0, ..., 5.0)."""
    ratings = table[S.RATING].to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isin(np.round(ratings, 6), np.round(np.asarray(allowed, dtype=np.float64), 6))
    if not bad.any():
        return []
    values = sorted(set(np.unique(ratings[bad])[:MAX_EXAMPLES].tolist()))
    msg = (
        f"column 'rating' has {int(bad.sum())} values outside the allowed "
        f"{min(allowed)}..{max(allowed)} scale {list(allowed)}: e.g. {values}"
    )
    return [Finding("ratings_on_scale", int(bad.sum()), msg, _examples(table, bad))]


def _duplicated(table: pa.Table, key: Sequence[str]) -> tuple[np.ndarray, int]:
    """``(mask of the rows whose key occurs more than once, number of such keys)``."""
    cols = [np.asarray(table[c].to_numpy(zero_copy_only=False)) for c in key]
    n = table.num_rows
    if n < 2:
        return np.zeros(n, bool), 0
    if len(cols) == 2 and all(c.dtype.kind in "iu" and c.dtype.itemsize <= 4 for c in cols):
        packed = (cols[0].astype(np.int64) << 32) | cols[1].astype(np.uint32).astype(np.int64)
        order = np.argsort(packed)  # ties in any order: only neighbours are compared
        ordered = packed[order]
        same = ordered[1:] == ordered[:-1]  # sorted row i+1 repeats row i
    else:
        order = np.lexsort(cols[::-1])
        same = np.logical_and.reduce([c[order][1:] == c[order][:-1] for c in cols])
    dup_sorted = np.zeros(n, bool)
    dup_sorted[1:] |= same
    dup_sorted[:-1] |= same
    dup = np.empty(n, bool)
    dup[order] = dup_sorted
    first_of_run = dup_sorted & ~np.r_[False, same]
    return dup, int(first_of_run.sum())


def check_unique_pairs(
    table: pa.Table,
    key: Sequence[str] = (S.USER_ID, S.ITEM_ID),
) -> list[Finding]:
    """At most one row per ``key`` (by default one rating per user and item): one sort of the
    key columns (two 32-bit ids packed into one int64), then equal neighbours."""
    dup, n_pairs = _duplicated(table, key)
    if not dup.any():
        return []
    msg = f"{n_pairs} ({', '.join(key)}) pairs occur more than once ({int(dup.sum())} rows)"
    return [Finding("unique_user_item", int(dup.sum()), msg, _examples(table, dup))]


def check_timestamps(table: pa.Table, latest: dt.datetime | None = None) -> list[Finding]:
    """Every timestamp lies in [``EARLIEST_TIMESTAMP``, ``latest``] (``latest`` defaults to
    now): the readers' bound (``schema.timestamps_out_of_range``), re-checked on the lake."""
    latest = latest or dt.datetime.now(dt.UTC)
    bad = S.timestamps_out_of_range(table[S.TIMESTAMP], latest).to_numpy()
    if not bad.any():
        return []
    msg = (
        f"column 'timestamp' has {int(bad.sum())} values outside "
        f"{EARLIEST_TIMESTAMP:%Y-%m-%d}..{latest:%Y-%m-%d}"
    )
    return [Finding("timestamps_in_range", int(bad.sum()), msg, _examples(table, bad))]


def check_items_in_movies(ratings: pa.Table, movies: pa.Table) -> list[Finding]:
    """Every rated item appears in the movies table."""
    rated = pc.unique(ratings[S.ITEM_ID])
    missing = pc.filter(rated, pc.invert(pc.is_in(rated, value_set=movies[S.ITEM_ID])))
    if len(missing) == 0:
        return []
    rows = pc.is_in(ratings[S.ITEM_ID], value_set=missing).to_numpy(zero_copy_only=False)
    msg = (
        f"{len(missing)} rated item ids are not in movies ({int(rows.sum())} ratings): "
        f"e.g. {missing.to_pylist()[:MAX_EXAMPLES]}"
    )
    return [Finding("rated_items_in_movies", len(missing), msg, _examples(ratings, rows))]


def validate_ratings(table: pa.Table, allowed: Sequence[float]) -> list[Finding]:
    """All blocking properties of a clean ratings table, in one list."""
    findings = check_schema(table, S.RATINGS_SCHEMA, "ratings")
    if findings:
        return findings  # the value checks need the canonical columns
    return (
        check_no_null_ids(table)
        + check_rating_values(table, allowed)
        + check_unique_pairs(table)
        + check_timestamps(table)
    )
