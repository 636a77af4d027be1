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


def id_counts(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Count occurrences of each id.

    Args:
        ids: Integer ids, any order, any values.

    Returns:
        ``(per_row, distinct)``: ``per_row[i]`` is how often ``ids[i]`` occurs (int64, same
        length as ``ids``); ``distinct`` holds the sorted distinct ids.
    """
    if len(ids) == 0:
        return np.zeros(0, np.int64), ids[:0].copy()
    lo, hi = int(ids.min()), int(ids.max())
    if lo >= 0 and hi < _DENSE_FACTOR * len(ids) + _DENSE_SLACK:
        counts = np.bincount(ids, minlength=hi + 1)
        return counts[ids], np.flatnonzero(counts).astype(ids.dtype)
    distinct, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return counts[inverse], distinct


def _n_distinct(ids: np.ndarray) -> int:
    return len(id_counts(ids)[1])


def _ids(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy()


def _stats(table: pa.Table) -> tuple[int, int, int]:
    """(rows, distinct users, distinct items) of a table."""
    users = _n_distinct(_ids(table, schema.USER_ID))
    return table.num_rows, users, _n_distinct(_ids(table, schema.ITEM_ID))


class _Tracker:
    """Applies steps to a table and records a report for each, reusing the last step's counts."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.stats = _stats(table)
        self.reports: list[StepReport] = []

    def apply(self, step: str, reason: str, mask: np.ndarray) -> int:
        """Keep rows where ``mask`` holds; record and return the number of rows dropped."""
        after = self.table if mask.all() else self.table.filter(pa.array(mask))
        stats = self.stats if after is self.table else _stats(after)
        (rb, ub, ib), (ra, ua, ia) = self.stats, stats
        self.reports.append(StepReport(step, reason, rb, ra, ub, ua, ib, ia))
        logger.info("filter %s: %d -> %d rows (%s)", step, rb, ra, reason)
        self.table, self.stats = after, stats
        return rb - ra


def top_n_item_ids(item_ids: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` most frequent ids, by count descending then id ascending.

    Args:
        item_ids: One id per rating row.
        n: How many ids to return (fewer if there are fewer distinct ids).

    Returns:
        The chosen ids in rank order (most rated first).
    """
    if len(item_ids) == 0:
        return item_ids[:0].copy()
    distinct, counts = np.unique(item_ids, return_counts=True)
    # lexsort: last key is primary -> count descending, then id ascending
    order = np.lexsort((distinct, -counts))
    return distinct[order[:n]]


def _min_count_round(tracker: _Tracker, config: FilterConfig, suffix: str) -> int:
    """One pass of the item then user minimum-count steps.

    Returns:
        Rows dropped by the user step. When it drops none, the item step's output stands, so
        both minimums hold at once and a k-core is reached.
    """
    if config.min_item_ratings > 0:
        per_row, _ = id_counts(_ids(tracker.table, schema.ITEM_ID))
        reason = f"item has < {config.min_item_ratings} ratings"
        keep = per_row >= config.min_item_ratings
        tracker.apply("min_item_ratings" + suffix, reason, keep)
    if config.min_user_ratings > 0:
        per_row, _ = id_counts(_ids(tracker.table, schema.USER_ID))
        reason = f"user has < {config.min_user_ratings} ratings among kept items"
        keep = per_row >= config.min_user_ratings
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
        mask = _ids(tracker.table, schema.RATING) >= np.float32(thr)
        tracker.apply("rating_threshold", f"rating < {thr}", mask)
    if config.top_n_items is not None:
        item_ids = _ids(tracker.table, schema.ITEM_ID)
        keep = top_n_item_ids(item_ids, config.top_n_items)
        reason = f"item not among the {config.top_n_items} most rated"
        tracker.apply("top_n_items", reason, np.isin(item_ids, keep))
    dropped = _min_count_round(tracker, config, "")
    rounds = 1
    # with only one minimum set, one pass is already stable
    both = config.min_item_ratings > 0 and config.min_user_ratings > 0
    while config.k_core and both and dropped:
        rounds += 1
        dropped = _min_count_round(tracker, config, f" [round {rounds}]")
    return tracker.table, tracker.reports
