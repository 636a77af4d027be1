"""Comparing trained models: the champion gate and the leaderboard table (plain Python/pyarrow).

**Champion gate.** Each model family keeps one champion. A challenger (every newly trained
version, e.g. from a retraining run) takes the title when

1. the family has no champion yet, or
2. both were measured on the same validation data with the same selection metric and the
   challenger is better by more than ``margin`` (lower valid RMSE by more than the margin;
   higher valid NDCG@K for a pure ranker); with ``margin=0`` strictly better, so a tie keeps
   the champion.

When the scores are not comparable (the champion was measured on other validation data and
could not be re-scored on the challenger's, or by another metric), ``when_incomparable``
decides: ``"keep"`` (the default: a model never replaces one it was not shown to beat) or
``"promote"`` (follow the newest data). The orchestration layer (``champion.py``) re-scores
the champion on the challenger's validation rows before it comes to that, and lets a model
trained on another MovieLens release take over (the champion's ids mean other people and
movies there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

# identity columns of a leaderboard row, in output order; every other key is a metric
ID_COLUMNS: tuple[str, ...] = ("model", "family", "run_id", "started")
_FIRST_METRICS = ("test_rmse", "test_mae", "test_fcp")


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` strictly improves on ``best`` (None or NaN: any finite value does).

    Args:
        value: The new score.
        best: The score to beat.
        mode: ``"min"`` (lower is better) or ``"max"``.

    Returns:
        True when ``value`` is finite and strictly better.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r} must be 'min' or 'max'")
    if not math.isfinite(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if mode == "min" else value > best


@dataclass(frozen=True)
class Contender:
    """A model as the champion rule sees it.

    Attributes:
        metric: Selection metric name (e.g. ``rmse``).
        value: Its value on the validation split.
        mode: ``"min"`` or ``"max"``.
        valid_sha256: Content hash of the validation split it was measured on.
    """

    metric: str
    value: float
    mode: str
    valid_sha256: str


INCOMPARABLE_POLICIES = ("keep", "promote")


def champion_verdict(new: Contender, current: Contender | None, margin: float = 0.0,
                     when_incomparable: str = "keep") -> tuple[bool, str]:
    """Whether ``new`` replaces ``current`` as champion (rules in the module docstring).

    Args:
        new: The challenger.
        current: The champion (None: there is none).
        margin: How much better (in the metric's units, >= 0) the challenger must be.
        when_incomparable: ``"keep"`` or ``"promote"`` when the scores are not comparable.

    Returns:
        ``(takes_title, reason)``.
    """
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"champion margin must be a finite number >= 0, got {margin!r}")
    if when_incomparable not in INCOMPARABLE_POLICIES:
        raise ValueError(f"when_incomparable={when_incomparable!r}: expected one of "
                         f"{', '.join(INCOMPARABLE_POLICIES)}")
    if current is None:
        return True, "no champion yet"
    why = None
    if current.valid_sha256 != new.valid_sha256:
        why = "the champion was validated on other data"
    elif current.metric != new.metric:
        why = f"the champion was selected by {current.metric}, not {new.metric}"
    if why is not None:
        if when_incomparable == "promote":
            return True, f"{why} (not comparable; policy: promote)"
        return False, f"{why} (not comparable; policy: keep the champion)"
    sign = -1.0 if new.mode == "min" else 1.0
    target = current.value + sign * margin  # what the challenger must strictly beat
    by = f" by more than {margin:g}" if margin else ""
    if is_better(new.value, target, new.mode) and is_better(new.value, current.value, new.mode):
        return True, f"{new.metric} {new.value:.4f} beats the champion's {current.value:.4f}{by}"
    return False, (f"{new.metric} {new.value:.4f} does not beat the champion's "
                   f"{current.value:.4f}{by}")


def _present(row: Mapping[str, Any], key: str) -> bool:
    value = row.get(key)
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update({k: None for k in row if k not in ID_COLUMNS})
    tests = [k for k in seen if k.startswith("test_") and k not in _FIRST_METRICS]
    rest = [k for k in seen if not k.startswith("test_")]
    return [k for k in _FIRST_METRICS if k in seen] + tests + rest


def leaderboard_table(
    rows: Sequence[Mapping[str, Any]],
    sort_by: str = "test_rmse",
    then_by: str = "test_ndcg_at_10",
) -> pa.Table:
    """One row per model, best first, with a 1-based ``rank`` column.

    Rows with ``sort_by`` come first, ascending (lower RMSE is better); rows without it
    (rankers that predict no ratings) follow, by ``then_by`` descending; ties by model name.

    Args:
        rows: Dicts with the ``ID_COLUMNS`` (``started`` a datetime) and float metrics;
            a missing metric becomes null.
        sort_by: Ascending sort key.
        then_by: Descending key for the rows lacking ``sort_by``.

    Returns:
        Columns ``rank``, the id columns, then ``test_rmse``, ``test_mae``, ``test_fcp``, the
        other ``test_*`` metrics and the remaining metrics (float64).

    Raises:
        ValueError: No rows.
    """
    if not rows:
        raise ValueError("leaderboard: no runs to compare")
    rated = sorted((r for r in rows if _present(r, sort_by)),
                   key=lambda r: (float(r[sort_by]), str(r["model"])))
    unrated = sorted((r for r in rows if not _present(r, sort_by)),
                     key=lambda r: (-float(r[then_by]) if _present(r, then_by) else math.inf,
                                    str(r["model"])))
    ordered = rated + unrated
    metrics = _metric_columns(ordered)
    columns: dict[str, pa.Array] = {"rank": pa.array(range(1, len(ordered) + 1), pa.int32())}
    for key, kind in zip(ID_COLUMNS, (pa.string(), pa.string(), pa.string(),
                                      pa.timestamp("ms", tz="UTC")), strict=True):
        columns[key] = pa.array([r.get(key) for r in ordered], kind)
    for key in metrics:
        columns[key] = pa.array([float(r[key]) if _present(r, key) else None for r in ordered],
                                pa.float64())
    return pa.table(columns)
