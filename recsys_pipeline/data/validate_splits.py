"""Validators for rating splits: each returns a list of problems (empty means the check passed).

They are the logic behind the blocking Dagster asset checks on ``rating_splits``; they never
raise for a bad split (only for malformed arguments), so a check can report every problem.
Stage order, used by the temporal checks: train < valid_fold_in < valid < test_fold_in < test.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa

from recsys_pipeline import schema
from recsys_pipeline.data.order import timestamps
from recsys_pipeline.data.split import DROPPED, SplitConfig, Splits

_SHOW = 3  # offending examples quoted per problem
_NAMES = (*schema.SPLIT_NAMES, DROPPED)


def _all_tables(splits: Splits) -> dict[str, pa.Table]:
    return {**splits.tables(), DROPPED: splits.dropped}


def _keys(table: pa.Table, n_items: int) -> np.ndarray:
    """int64 ``user_idx * n_items + item_idx`` per row (built in place: one allocation)."""
    key = table.column(schema.USER_IDX).to_numpy().astype(np.int64)
    key *= n_items
    key += table.column(schema.ITEM_IDX).to_numpy()
    return key


def _n_items(*tables: pa.Table) -> int:
    return 1 + max(
        (int(t.column(schema.ITEM_IDX).to_numpy().max()) for t in tables if len(t)), default=0
    )


def _pair(key: int, n_items: int) -> str:
    return f"(user_idx={key // n_items}, item_idx={key % n_items})"


def _pairs(keys: np.ndarray, n_items: int) -> str:
    return ", ".join(_pair(int(k), n_items) for k in keys[:_SHOW])


def _fingerprint(table: pa.Table, n_items: int) -> np.uint64:
    """Order-independent hash of the rows' (user_idx, item_idx, rating, timestamp) multiset."""
    x = _keys(table, n_items).view(np.uint64)  # in-place arithmetic wraps modulo 2**64
    x *= np.uint64(0x9E3779B97F4A7C15)
    x ^= table.column(schema.RATING).to_numpy().view(np.uint32)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= timestamps(table).view(np.uint64)
    for shift, mult in ((31, 0x94D049BB133111EB), (29, 0xBF58476D1CE4E5B9)):
        x ^= x >> np.uint64(shift)  # splitmix64-style finaliser: spreads every input bit
        x *= np.uint64(mult)
    x ^= x >> np.uint64(32)
    return _sum(x)


def _sum(x: np.ndarray | list) -> np.uint64:
    """Sum modulo 2**64 (array reductions wrap silently; scalar additions would warn)."""
    return np.asarray(x, dtype=np.uint64).sum(dtype=np.uint64)


def check_disjoint(splits: Splits) -> list[str]:
    """No (user_idx, item_idx) pair appears in two tables (or twice in one).

    Args:
        splits: Splits to check (all five tables and ``dropped``).

    Returns:
        Problem strings, e.g. naming pairs and the tables holding them.
    """
    tables = _all_tables(splits)
    n_items = _n_items(*tables.values())
    keys = np.concatenate([_keys(t, n_items) for t in tables.values()])
    keys.sort()
    dup = np.unique(keys[1:][keys[1:] == keys[:-1]])
    if len(dup) == 0:
        return []
    examples = []
    for key in dup[:_SHOW]:
        where = [name for name, t in tables.items() if (_keys(t, n_items) == key).any()]
        examples.append(f"{_pair(int(key), n_items)} in {'+'.join(where)}")
    return [
        f"disjoint: {len(dup)} (user_idx, item_idx) pair(s) in more than one row, e.g. "
        + "; ".join(examples)
    ]


def check_complete(encoded: pa.Table, splits: Splits) -> list[str]:
    """The split tables plus ``dropped`` hold exactly the rows of ``encoded``.

    Row counts must match, and so must an order-independent 64-bit hash of all rows
    (a splitmix64-style mix of user_idx, item_idx, rating bits and timestamp per row, summed
    modulo 2**64): a missing, extra, duplicated or altered row changes the sum except with
    probability about 2**-64, and no sort is needed. Only on a mismatch are the pairs sorted
    and compared exactly, to name the offending rows.

    Args:
        encoded: The table that was split.
        splits: Its splits.

    Returns:
        Problem strings naming missing/extra pairs or changed values.
    """
    tables = list(_all_tables(splits).values())
    n_items = _n_items(encoded, *tables)
    total = sum(t.num_rows for t in tables)
    if total == encoded.num_rows and _fingerprint(encoded, n_items) == _sum(
        [_fingerprint(t, n_items) for t in tables]
    ):
        return []
    expected = np.sort(_keys(encoded, n_items))
    got = np.sort(np.concatenate([_keys(t, n_items) for t in tables]))
    if total == encoded.num_rows and np.array_equal(expected, got):
        return ["complete: same pairs as the input but a rating or timestamp differs"]
    missing = np.setdiff1d(expected, got)
    extra = np.setdiff1d(got, expected)
    msg = f"complete: input has {encoded.num_rows} rows, splits hold {total}"
    if len(missing):
        msg += f"; {len(missing)} input pair(s) missing, e.g. {_pairs(missing, n_items)}"
    if len(extra):
        msg += f"; {len(extra)} pair(s) not in the input, e.g. {_pairs(extra, n_items)}"
    return [msg]


def _stage_extremes(tables: list[pa.Table], n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (stage, user) min and max timestamp; +inf/-inf sentinels where a user has none."""
    lo = np.full((len(tables), n_users), np.iinfo(np.int64).max)
    hi = np.full((len(tables), n_users), np.iinfo(np.int64).min)
    for s, t in enumerate(tables):
        user, ts = t.column(schema.USER_IDX).to_numpy(), timestamps(t)
        np.minimum.at(lo[s], user, ts)
        np.maximum.at(hi[s], user, ts)
    return lo, hi


def check_user_temporal(splits: Splits) -> list[str]:
    """Per user, no row of a stage is earlier than the user's latest row of an earlier stage.

    E.g. no valid/test interaction precedes the same user's latest train interaction, and no
    test row precedes a valid row. Equal timestamps are allowed.

    Args:
        splits: Splits to check.

    Returns:
        One problem string per leaking stage, with counts and example users.
    """
    tables = list(splits.tables().values())
    n_users = 1 + max(
        (int(t.column(schema.USER_IDX).to_numpy().max()) for t in tables if len(t)), default=0
    )
    lo, hi = _stage_extremes(tables, n_users)
    before = np.maximum.accumulate(hi, axis=0)  # latest row of this or any earlier stage
    problems = []
    for s, name in enumerate(schema.SPLIT_NAMES[1:], start=1):
        bad = np.flatnonzero(lo[s] < before[s - 1])
        if len(bad):
            ex = [f"user_idx={u}: {lo[s, u]} < {before[s - 1, u]}" for u in bad[:_SHOW]]
            problems.append(
                f"user temporal leakage: {len(bad)} user(s) have {name} rows earlier than their "
                f"latest earlier-stage row (epoch s), e.g. {'; '.join(ex)}"
            )
    return problems


def _check_cuts(splits: Splits, valid_start: datetime, test_start: datetime) -> list[str]:
    v, t = int(valid_start.timestamp()), int(test_start.timestamp())
    windows = {
        schema.TRAIN: (None, v),
        schema.VALID_FOLD_IN: (v, t),
        schema.VALID: (v, t),
        schema.TEST_FOLD_IN: (t, None),
        schema.TEST: (t, None),
    }
    problems = []
    for name, table in splits.tables().items():
        ts, (lo, hi) = timestamps(table), windows[name]
        outside = np.zeros(len(ts), bool)
        if lo is not None:
            outside |= ts < lo
        if hi is not None:
            outside |= ts >= hi
        if outside.any():
            problems.append(
                f"global temporal leakage: {int(outside.sum())} {name} row(s) outside "
                f"[{lo}, {hi}) epoch s, e.g. {ts[outside][:_SHOW].tolist()}"
            )
    return problems


def check_global_temporal(
    splits: Splits, valid_start: datetime | None = None, test_start: datetime | None = None
) -> list[str]:
    """No row of a later stage is earlier than any row of an earlier stage, over all users.

    With explicit cuts also: train before ``valid_start``, valid (and valid_fold_in) in
    ``[valid_start, test_start)``, test (and test_fold_in) from ``test_start`` on.

    Args:
        splits: Splits to check.
        valid_start: First allowed valid timestamp (optional; used only with ``test_start``).
        test_start: First allowed test timestamp (optional).

    Returns:
        Problem strings with counts.
    """
    problems = []
    latest, latest_name = None, ""
    for name, table in splits.tables().items():
        ts = timestamps(table)
        if not len(ts):
            continue
        if latest is not None and (n := int((ts < latest).sum())):
            problems.append(
                f"global temporal leakage: {n} {name} row(s) earlier than the latest "
                f"{latest_name} row ({latest} epoch s)"
            )
        if latest is None or ts.max() > latest:
            latest, latest_name = int(ts.max()), name
    if valid_start is not None and test_start is not None:
        problems += _check_cuts(splits, valid_start, test_start)
    return problems


def check_held_out_users(splits: Splits) -> list[str]:
    """Strong generalization: held-out users never in train, valid and test users disjoint.

    Args:
        splits: Splits to check.

    Returns:
        Problem strings naming example users.
    """

    def users(*tables: pa.Table) -> np.ndarray:
        return np.unique(np.concatenate([t.column(schema.USER_IDX).to_numpy() for t in tables]))

    train = users(splits.train)
    valid = users(splits.valid_fold_in, splits.valid)
    test = users(splits.test_fold_in, splits.test)
    problems = []
    for what, a, b in (
        ("valid users in train", valid, train),
        ("test users in train", test, train),
        ("users in both valid and test", valid, test),
    ):
        both = np.intersect1d(a, b)
        if len(both):
            problems.append(
                f"held-out users: {len(both)} {what}, e.g. user_idx {both[:_SHOW].tolist()}"
            )
    return problems


def validate_splits(encoded: pa.Table, splits: Splits, config: SplitConfig) -> list[str]:
    """Every check that applies to ``config.method``.

    Always disjoint and complete; temporal methods add per-user (and for global_temporal,
    global) leakage checks; strong generalization adds held-out-user checks and, when fold-in
    is chosen by time, the per-user fold-in-before-evaluation order.

    Args:
        encoded: The table that was split.
        splits: Its splits.
        config: The config used (selects the checks).

    Returns:
        All problems found; empty if the splits are valid.
    """
    problems = check_disjoint(splits) + check_complete(encoded, splits)
    if config.method in ("user_temporal", "global_temporal"):
        problems += check_user_temporal(splits)
    if config.method == "global_temporal":
        report = splits.report
        cuts = (report.valid_start, report.test_start) if report else (None, None)
        problems += check_global_temporal(splits, *cuts)
    if config.method == "strong_generalization":
        problems += check_held_out_users(splits)
        if config.fold_in_by == "time":
            problems += check_user_temporal(splits)
    return problems


def split_problems(
    encoded: pa.Table,
    splits: Splits,
    method: str,
    fold_in_by: str = "time",
    valid_start: datetime | None = None,
    test_start: datetime | None = None,
) -> dict[str, list[str]]:
    """The problems of :func:`validate_splits`, grouped by the property they break.

    Args:
        encoded: The table that was split.
        splits: Its splits.
        method: The split method (selects which leakage checks apply).
        fold_in_by: strong_generalization: ``time`` adds the fold-in-first order check.
        valid_start: global_temporal: the valid cut (checked when given).
        test_start: global_temporal: the test cut (checked when given).

    Returns:
        ``splits_disjoint``, ``splits_complete``, ``no_split_leakage`` and
        ``held_out_users_unseen`` -> problems (empty where the property holds or does not
        apply to ``method``).
    """
    leakage: list[str] = []
    if method in ("user_temporal", "global_temporal"):
        leakage += check_user_temporal(splits)
    if method == "global_temporal":
        leakage += check_global_temporal(splits, valid_start, test_start)
    if method == "strong_generalization" and fold_in_by == "time":
        leakage += check_user_temporal(splits)
    return {
        "splits_disjoint": check_disjoint(splits),
        "splits_complete": check_complete(encoded, splits),
        "no_split_leakage": leakage,
        "held_out_users_unseen": (
            check_held_out_users(splits) if method == "strong_generalization" else []
        ),
    }
