"""Filter clean ratings down to the users, items and ratings a run trains on.

Steps run in this fixed order; a step whose knob is at its default is skipped:

1. ``rating_threshold``: keep ratings ``>= threshold`` (implicit feedback: "liked" only).
2. ``top_n_items``: keep the ``N`` most-rated items. "Most rated" counts the rows left after
   step 1; ties are broken deterministically by count descending, then ``item_id`` ascending.
3. ``min_item_ratings``: keep items with at least that many rows left.
4. ``min_user_ratings``: keep users with at least that many rows left, i.e. counted among the
   items kept by steps 2–3.
5. ``k_core``: repeat steps 3–4 until neither removes a row, so that every kept user and item
   meets its minimum at the same time (a single pass of 4 can push an item under its minimum).

So "the 200 most-rated movies, then users with at least 100 ratings among them" is
``FilterConfig(top_n_items=200, min_user_ratings=100)``. Row order is preserved throughout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys_pipeline import schema

logger = logging.getLogger(__name__)

# A dense bincount over raw ids is used while max(id) stays within this factor of the row count
# (plus a constant); sparser or negative ids fall back to a sort-based np.unique.
_DENSE_FACTOR = 4
_DENSE_SLACK = 1 << 22


@dataclass(frozen=True)
class FilterConfig:
    """Which users, items and ratings to keep (see the module docstring for the step order).

    Attributes:
        min_user_ratings: Minimum rows per kept user, counted after the item steps (0: off).
        min_item_ratings: Minimum rows per kept item (0: off).
        top_n_items: Keep only the N most-rated items (None: off).
        rating_threshold: Keep ratings ``>=`` this value (None: off).
        k_core: Repeat the item/user minimum steps until stable.
    """

    min_user_ratings: int = 0
    min_item_ratings: int = 0
    top_n_items: int | None = None
    rating_threshold: float | None = None
    k_core: bool = False

    def __post_init__(self) -> None:
        if self.min_user_ratings < 0 or self.min_item_ratings < 0:
            raise ValueError(
                f"FilterConfig: minimum counts must be >= 0, got min_user_ratings="
                f"{self.min_user_ratings}, min_item_ratings={self.min_item_ratings}"
            )
        if self.top_n_items is not None and self.top_n_items < 1:
            raise ValueError(f"FilterConfig: top_n_items must be >= 1, got {self.top_n_items}")


@dataclass(frozen=True)
class StepReport:
    """Counts before and after one filter step.

    Attributes:
        step: Step name (``rating_threshold``, ``top_n_items``, ``min_item_ratings``,
            ``min_user_ratings``; k-core rounds after the first get a ``[round r]`` suffix).
        reason: Why rows were dropped, in words (e.g. ``"rating < 4.0"``).
        rows_before, rows_after, users_before, users_after, items_before, items_after: Counts.
    """

    step: str
    reason: str
    rows_before: int
    rows_after: int
    users_before: int
    users_after: int
    items_before: int
    items_after: int

    @property
    def rows_dropped(self) -> int:
        """Rows removed by this step."""
        return self.rows_before - self.rows_after


def dense_codes(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Non-negative codes for ``ids`` whose order matches the ids' order.

    Args:
        ids: Integer ids, any order, any values.

    Returns:
        ``(codes, size)``: the ids themselves when they are non-negative and compact enough
        for a dense ``np.bincount`` (no copy), else their ranks among the distinct ids; and the
        size of the code space.
    """
    if len(ids) == 0:
        return ids.astype(np.int64), 0
    lo, hi = int(ids.min()), int(ids.max())
    if lo >= 0 and hi < _DENSE_FACTOR * len(ids) + _DENSE_SLACK:
        return ids, hi + 1
    distinct, inverse = np.unique(ids, return_inverse=True)
    return inverse.astype(np.int32), len(distinct)


def _top_codes(counts: np.ndarray, n: int) -> np.ndarray:
    """Codes of the ``n`` largest counts, ties by code ascending (== id ascending)."""
    present = np.flatnonzero(counts)
    # lexsort: last key is primary -> count descending, then code ascending
    return present[np.lexsort((present, -counts[present]))[:n]]


def top_n_item_ids(item_ids: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` most frequent ids, by count descending then id ascending.

    Args:
        item_ids: One id per rating row.
        n: How many ids to return (fewer if there are fewer distinct ids).

    Returns:
        The chosen ids in rank order (most rated first).
    """
    codes, size = dense_codes(item_ids)
    top = _top_codes(np.bincount(codes, minlength=size), n)
    if codes is item_ids:
        return top.astype(item_ids.dtype)
    return np.unique(item_ids)[top]


class _Tracker:
    """Runs steps on id codes and records a report per step; builds the table once at the end.

    Only numpy arrays of the surviving rows' user/item codes are filtered step by step; the
    Arrow table is filtered once, with the combined mask, in :meth:`result`.
    """

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.user, self.n_user_codes = dense_codes(table.column(schema.USER_ID).to_numpy())
        self.item, self.n_item_codes = dense_codes(table.column(schema.ITEM_ID).to_numpy())
        self.alive = np.ones(table.num_rows, bool)
        self.reports: list[StepReport] = []
        self._count_cache: dict[str, np.ndarray] = {}
        self.stats = self._stats()

    def counts(self, which: str) -> np.ndarray:
        """Rows per user code (``"user"``) or item code (``"item"``) among surviving rows."""
        if which not in self._count_cache:
            codes, size = (
                (self.user, self.n_user_codes)
                if which == "user"
                else (self.item, self.n_item_codes)
            )
            self._count_cache[which] = np.bincount(codes, minlength=size)
        return self._count_cache[which]

    def _stats(self) -> tuple[int, int, int]:
        users = int(np.count_nonzero(self.counts("user")))
        return len(self.user), users, int(np.count_nonzero(self.counts("item")))

    def apply(self, step: str, reason: str, mask: np.ndarray) -> int:
        """Keep surviving rows where ``mask`` holds; record and return the rows dropped."""
        if not mask.all():
            self.user, self.item = self.user[mask], self.item[mask]
            self.alive[self.alive] = mask
            self._count_cache.clear()
        before, self.stats = self.stats, self._stats()
        (rb, ub, ib), (ra, ua, ia) = before, self.stats
        self.reports.append(StepReport(step, reason, rb, ra, ub, ua, ib, ia))
        logger.info("filter %s: %d -> %d rows (%s)", step, rb, ra, reason)
        return rb - ra

    def result(self) -> pa.Table:
        """The input table restricted to the surviving rows (input order)."""
        return self.table if self.alive.all() else self.table.filter(pa.array(self.alive))


def _min_count_round(tracker: _Tracker, config: FilterConfig, suffix: str) -> int:
    """One pass of the item then user minimum-count steps.

    Returns:
        Rows dropped by the user step. When it drops none, the item step's output stands, so
        both minimums hold at once and a k-core is reached.
    """
    if config.min_item_ratings > 0:
        keep = (tracker.counts("item") >= config.min_item_ratings)[tracker.item]
        reason = f"item has < {config.min_item_ratings} ratings"
        tracker.apply("min_item_ratings" + suffix, reason, keep)
    if config.min_user_ratings > 0:
        keep = (tracker.counts("user") >= config.min_user_ratings)[tracker.user]
        reason = f"user has < {config.min_user_ratings} ratings among kept items"
        return tracker.apply("min_user_ratings" + suffix, reason, keep)
    return 0


def filter_ratings(ratings: pa.Table, config: FilterConfig) -> tuple[pa.Table, list[StepReport]]:
    """Apply the filter steps in the documented order.

    Args:
        ratings: Ratings with at least ``user_id``, ``item_id``, ``rating`` columns
            (normally ``schema.RATINGS_SCHEMA``).
        config: Which steps to run.

    Returns:
        ``(filtered, reports)``: the kept rows in their original order, and one
        :class:`StepReport` per step that ran (k-core adds one item/user pair per extra
        round; it stops once a round's user step drops nothing).
    """
    for col in (schema.USER_ID, schema.ITEM_ID, schema.RATING):
        if col not in ratings.column_names:
            raise ValueError(f"filter_ratings: input table lacks column {col!r}")
    tracker = _Tracker(ratings)
    if config.rating_threshold is not None:
        thr = config.rating_threshold
        mask = ratings.column(schema.RATING).to_numpy() >= np.float32(thr)
        tracker.apply("rating_threshold", f"rating < {thr}", mask)
    if config.top_n_items is not None:
        top = _top_codes(tracker.counts("item"), config.top_n_items)
        is_top = np.zeros(tracker.n_item_codes, bool)
        is_top[top] = True
        reason = f"item not among the {config.top_n_items} most rated"
        tracker.apply("top_n_items", reason, is_top[tracker.item])
    dropped = _min_count_round(tracker, config, "")
    rounds = 1
    # with only one minimum set, one pass is already stable
    both = config.min_item_ratings > 0 and config.min_user_ratings > 0
    while config.k_core and both and dropped:
        rounds += 1
        dropped = _min_count_round(tracker, config, f" [round {rounds}]")
    return tracker.result(), tracker.reports
