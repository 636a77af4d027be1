"""Split encoded ratings into train / validation / test, four ways.

Every row of the input lands in exactly one of five tables (``schema.SPLIT_NAMES``) or in
``dropped``:

* ``train``: what models fit on.
* ``valid`` / ``test``: the interactions to predict.
* ``valid_fold_in`` / ``test_fold_in``: interactions of held-out users that a model may *see*
  at evaluation time (strong generalization: fold the user in, then predict ``valid``/``test``).
  Empty for every other method.
* ``dropped``: cold-start rows removed when ``drop_cold_start`` is set.

Methods (``SplitConfig.method``):

* ``random``: each row gets a seeded, uniformly random table with exact ``ratios`` sizes.
* ``global_temporal``: two timestamp cuts; ``train: t < valid_start <= valid < test_start <=
  test``. Cuts are explicit (``cut_times``) or the timestamps at the ``ratios`` quantiles, so
  rows with equal timestamps never straddle a cut and the fractions can differ a little.
* ``user_temporal``: per user, chronologically, the last ``leave_last_k`` rows go to test and
  the ``k`` before to valid, or else the last fractions given by ``ratios`` (boundaries rounded
  half up). Each user keeps at least one train row.
* ``strong_generalization``: ``n_valid_users`` / ``n_test_users`` users (seeded) are held out
  entirely; the first ``fold_in_fraction`` of each held-out user's rows (chronologically, or a
  seeded random subset with ``fold_in_by="random"``) is fold-in, the rest evaluation. Each
  held-out user with two or more rows keeps at least one row on each side.

"Chronologically" always means by timestamp, ties broken by input row order (stable sort), so
results are deterministic given the input and the seed. Each output table keeps the input's
relative row order. Cold start: users or items of a non-train table that never occur in train
are counted per table in the report; with ``drop_cold_start`` their rows move to ``dropped``
(for strong generalization only cold *items* are dropped: held-out users are cold by design).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pyarrow as pa

from recsys_pipeline import schema
from recsys_pipeline.data.order import (
    chronological_order,
    round_half_up,
    segment_codes,
    timestamps,
)

logger = logging.getLogger(__name__)

SplitMethod = Literal["random", "global_temporal", "user_temporal", "strong_generalization"]
DROPPED = "dropped"
# row codes: index into schema.SPLIT_NAMES, then DROPPED
_CODES = {name: i for i, name in enumerate((*schema.SPLIT_NAMES, DROPPED))}
_TRAIN, _VFOLD, _VALID, _TFOLD, _TEST = (_CODES[n] for n in schema.SPLIT_NAMES)
_DROP = _CODES[DROPPED]


@dataclass(frozen=True)
class SplitConfig:
    """How to split (see the module docstring for each method's exact rule).

    Attributes:
        method: ``random``, ``global_temporal``, ``user_temporal`` or ``strong_generalization``.
        ratios: (train, valid, test) fractions, summing to 1: of rows (random), of the timestamp
            distribution (global_temporal), of each user's rows (user_temporal without
            leave_last_k), of users (strong_generalization without explicit user counts).
        seed: Seed of the ``np.random.Generator`` (random, strong_generalization).
        cut_times: global_temporal: explicit (valid_start, test_start) instead of quantiles.
        leave_last_k: user_temporal: hold out each user's last k rows for test and k for valid.
        n_valid_users: strong_generalization: held-out validation users (None: from ratios).
        n_test_users: strong_generalization: held-out test users (None: from ratios).
        fold_in_fraction: strong_generalization: share of a held-out user's rows given as input.
        fold_in_by: strong_generalization: fold-in rows are the earliest (``time``) or random.
        drop_cold_start: Move rows of users/items unseen in train to ``dropped``.
    """

    method: SplitMethod = "user_temporal"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42
    cut_times: tuple[datetime, datetime] | None = None
    leave_last_k: int | None = None
    n_valid_users: int | None = None
    n_test_users: int | None = None
    fold_in_fraction: float = 0.8
    fold_in_by: Literal["time", "random"] = "time"
    drop_cold_start: bool = False

    def __post_init__(self) -> None:
        if self.method not in SplitMethod.__args__:  # type: ignore[attr-defined]
            raise ValueError(f"SplitConfig.method: unknown {self.method!r}")
        if len(self.ratios) != 3 or min(self.ratios) < 0 or abs(sum(self.ratios) - 1) > 1e-6:
            raise ValueError(f"SplitConfig.ratios must be 3 fractions summing to 1: {self.ratios}")
        if self.cut_times is not None and self.cut_times[0] > self.cut_times[1]:
            raise ValueError(f"SplitConfig.cut_times must be ordered: {self.cut_times}")
        if self.leave_last_k is not None and self.leave_last_k < 1:
            raise ValueError(f"SplitConfig.leave_last_k must be >= 1: {self.leave_last_k}")
        if not 0 < self.fold_in_fraction < 1:
            raise ValueError(
                f"SplitConfig.fold_in_fraction must be in (0, 1): {self.fold_in_fraction}"
            )
        if self.fold_in_by not in ("time", "random"):
            raise ValueError(f"SplitConfig.fold_in_by: unknown {self.fold_in_by!r}")


@dataclass(frozen=True)
class SplitReport:
    """What a split produced.

    Attributes:
        method: The split method.
        rows: Rows per table name (``schema.SPLIT_NAMES`` and ``dropped``).
        users: Distinct users per table name.
        cold_start_users: Per non-train table, distinct users absent from train (before dropping).
        cold_start_items: Per non-train table, distinct items absent from train (before dropping).
        cold_start_rows: Per non-train table, the cold rows ``drop_cold_start`` removes (cold
            user or item; cold item only for strong generalization), counted before dropping.
        valid_start: global_temporal: first timestamp of valid (None otherwise).
        test_start: global_temporal: first timestamp of test (None otherwise).
    """

    method: str
    rows: dict[str, int]
    users: dict[str, int]
    cold_start_users: dict[str, int]
    cold_start_items: dict[str, int]
    cold_start_rows: dict[str, int]
    valid_start: datetime | None = None
    test_start: datetime | None = None


@dataclass(frozen=True)
class Splits:
    """The five split tables plus dropped rows, each ``schema.ENCODED_RATINGS_SCHEMA``."""

    train: pa.Table
    valid_fold_in: pa.Table
    valid: pa.Table
    test_fold_in: pa.Table
    test: pa.Table
    dropped: pa.Table
    report: SplitReport | None = field(default=None, compare=False)

    def tables(self) -> dict[str, pa.Table]:
        """Split name -> table, in ``schema.SPLIT_NAMES`` order (``dropped`` excluded)."""
        return {name: getattr(self, name) for name in schema.SPLIT_NAMES}


def _bounds(n: np.ndarray | int, ratios: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """End of train and end of valid for ``n`` rows (rounded half up, so they sum exactly)."""
    return round_half_up(np.asarray(n) * ratios[0]), round_half_up(
        np.asarray(n) * (ratios[0] + ratios[1])
    )


def _random_codes(n: int, config: SplitConfig) -> np.ndarray:
    end_train, end_valid = (int(b) for b in _bounds(n, config.ratios))
    sizes = [end_train, end_valid - end_train, n - end_valid]
    # exact sizes, uniformly placed: shuffle the int8 labels themselves (4x less memory
    # traffic than shuffling an index permutation)
    code = np.repeat(np.array([_TRAIN, _VALID, _TEST], np.int8), sizes)
    np.random.default_rng(config.seed).shuffle(code)
    return code


def _global_codes(ts: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, tuple[int, int]]:
    if config.cut_times is not None:
        cuts = tuple(int(t.timestamp()) for t in config.cut_times)
    else:
        ends = [int(b) for b in _bounds(len(ts), config.ratios)]
        kth = [k for k in ends if k < len(ts)]
        part = np.partition(ts, kth) if kth else ts
        cuts = tuple(int(part[k]) if k < len(ts) else int(ts.max()) + 1 for k in ends)
    code = np.full(len(ts), _TEST, np.int8)
    code[ts < cuts[1]] = _VALID
    code[ts < cuts[0]] = _TRAIN
    return code, cuts  # type: ignore[return-value]


def _user_temporal_codes(user: np.ndarray, ts: np.ndarray, config: SplitConfig) -> np.ndarray:
    order = chronological_order(user, ts)
    size = np.bincount(user)
    if config.leave_last_k is not None:
        n_test = np.minimum(config.leave_last_k, np.maximum(size - 1, 0))
        n_valid = np.minimum(config.leave_last_k, np.maximum(size - 1 - n_test, 0))
        n_train = size - n_test - n_valid
    else:
        end_train, end_valid = _bounds(size, config.ratios)
        n_train = np.minimum(np.maximum(end_train, 1), size)  # every user keeps a train row
        n_valid = np.maximum(end_valid, n_train) - n_train
        n_test = size - n_train - n_valid
    code = np.empty(len(user), np.int8)
    parts = np.stack([n_train, n_valid, n_test], axis=1)
    code[order] = segment_codes(parts, np.array([_TRAIN, _VALID, _TEST], np.int8))
    return code


def _held_out_users(user: np.ndarray, config: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """Per user index: 0 train, 1 valid, 2 test."""
    n_users = int(user.max()) + 1 if len(user) else 0
    present = np.flatnonzero(np.bincount(user, minlength=n_users))
    n_valid = config.n_valid_users
    n_test = config.n_test_users
    n_valid = int(round_half_up(len(present) * config.ratios[1])) if n_valid is None else n_valid
    n_test = int(round_half_up(len(present) * config.ratios[2])) if n_test is None else n_test
    if n_valid < 0 or n_test < 0 or n_valid + n_test >= len(present):
        raise ValueError(
            f"strong_generalization: cannot hold out {n_valid} valid + {n_test} test users "
            f"of {len(present)} (at least one train user must remain)"
        )
    chosen = rng.permutation(present)
    role = np.zeros(n_users, np.int8)
    role[chosen[:n_valid]] = 1
    role[chosen[n_valid : n_valid + n_test]] = 2
    return role


def _strong_codes(user: np.ndarray, ts: np.ndarray, config: SplitConfig) -> np.ndarray:
    rng = np.random.default_rng(config.seed)
    role = _held_out_users(user, config, rng)
    rows = np.flatnonzero(role[user] > 0)
    held_user = user[rows]
    if config.fold_in_by == "time":
        order = chronological_order(held_user, ts[rows])
    else:  # a random key per row gives a seeded random order within each user
        order = chronological_order(held_user, rng.integers(0, 2**31, len(rows)))
    size = np.bincount(held_user, minlength=len(role))
    n_fold = np.clip(round_half_up(size * config.fold_in_fraction), 1, np.maximum(size - 1, 1))
    n_fold = np.minimum(n_fold, size)  # users without rows here get (0, 0)
    # per user: fold-in code then evaluation code, by the user's role
    fold_code = np.where(role == 2, _TFOLD, _VFOLD).astype(np.int8)
    eval_code = np.where(role == 2, _TEST, _VALID).astype(np.int8)
    labels = np.stack([fold_code, eval_code], axis=1).ravel()
    counts = np.stack([n_fold, size - n_fold], axis=1).ravel()
    code = np.full(len(user), _TRAIN, np.int8)
    code[rows[order]] = np.repeat(labels, counts)
    return code


def _count_distinct(ids: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(ids))) if len(ids) else 0


def _seen(ids: np.ndarray, size: int) -> np.ndarray:
    seen = np.zeros(size, bool)
    seen[ids] = True
    return seen


def _partition(
    user: np.ndarray, item: np.ndarray, code: np.ndarray, config: SplitConfig
) -> tuple[np.ndarray, dict[str, tuple[int, int]], dict[str, dict[str, int]]]:
    """Row order grouping the tables, each table's (start, stop), and cold-start counts.

    Rows are grouped by code with a stable sort, so each table keeps input order. Cold-start
    rows of the non-train tables are then counted and, if configured, moved to ``dropped``.
    """
    order = np.argsort(code, kind="stable")  # int8 keys: a radix sort
    ends = np.cumsum(np.bincount(code, minlength=len(_CODES)))
    starts = np.concatenate([[0], ends[:-1]])
    spans = {name: (int(starts[c]), int(ends[c])) for name, c in _CODES.items()}
    user_s, item_s = user[order], item[order]
    train = slice(*spans[schema.TRAIN])
    seen_user = _seen(user_s[train], int(user.max()) + 1)
    seen_item = _seen(item_s[train], int(item.max()) + 1)
    stats: dict[str, dict[str, int]] = {"users": {}, "items": {}, "rows": {}}
    pieces, dropped = [order[train]], [order[slice(*spans[DROPPED])]]
    for name in schema.SPLIT_NAMES[1:]:
        part = slice(*spans[name])
        cold_user, cold_item = ~seen_user[user_s[part]], ~seen_item[item_s[part]]
        # held-out users are cold by design in strong generalization: only items count there
        cold = cold_item if config.method == "strong_generalization" else cold_user | cold_item
        stats["users"][name] = _count_distinct(user_s[part][cold_user])
        stats["items"][name] = _count_distinct(item_s[part][cold_item])
        stats["rows"][name] = int(np.count_nonzero(cold))
        if config.drop_cold_start:
            pieces.append(order[part][~cold])
            dropped.append(order[part][cold])
        else:
            pieces.append(order[part])
    pieces.append(np.sort(np.concatenate(dropped)))  # dropped rows back in input order
    bounds = np.cumsum([0] + [len(p) for p in pieces])
    spans = {name: (int(bounds[i]), int(bounds[i + 1])) for i, name in enumerate(_CODES)}
    return np.concatenate(pieces), spans, stats


def _to_datetime(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def split_ratings(encoded: pa.Table, config: SplitConfig) -> Splits:
    """Split encoded ratings by ``config.method`` (rules in the module docstring).

    Args:
        encoded: ``schema.ENCODED_RATINGS_SCHEMA`` table with unique (user_idx, item_idx).
        config: Method and its parameters.

    Returns:
        :class:`Splits` whose tables partition ``encoded`` (with ``dropped``), each in input
        row order, plus a :class:`SplitReport`.
    """
    if encoded.num_rows == 0:
        raise ValueError("split_ratings: the encoded ratings table is empty")
    user = encoded.column(schema.USER_IDX).to_numpy()
    item = encoded.column(schema.ITEM_IDX).to_numpy()
    ts = timestamps(encoded)
    cuts: tuple[int, int] | None = None
    if config.method == "random":
        code = _random_codes(len(user), config)
    elif config.method == "global_temporal":
        code, cuts = _global_codes(ts, config)
    elif config.method == "user_temporal":
        code = _user_temporal_codes(user, ts, config)
    else:
        code = _strong_codes(user, ts, config)
    order, spans, cold = _partition(user, item, code, config)
    ordered = encoded.take(pa.array(order))
    tables = {name: ordered.slice(lo, hi - lo) for name, (lo, hi) in spans.items()}
    user_sorted = user[order]
    report = SplitReport(
        method=config.method,
        rows={name: hi - lo for name, (lo, hi) in spans.items()},
        users={name: _count_distinct(user_sorted[lo:hi]) for name, (lo, hi) in spans.items()},
        cold_start_users=cold["users"],
        cold_start_items=cold["items"],
        cold_start_rows=cold["rows"],
        valid_start=_to_datetime(cuts[0]) if cuts else None,
        test_start=_to_datetime(cuts[1]) if cuts else None,
    )
    logger.info("split %s: %s", config.method, report.rows)
    return Splits(**tables, report=report)
