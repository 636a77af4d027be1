"""The champion rule and the leaderboard table (pure functions)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from recsys_pipeline.evaluation.selection import (
    Contender,
    champion_verdict,
    is_better,
    leaderboard_table,
)

A, B = "a" * 64, "b" * 64


@pytest.mark.parametrize(("new", "current", "wins", "reason"), [
    (Contender("rmse", 0.90, "min", A), None, True, "no champion yet"),
    (Contender("rmse", 0.85, "min", A), Contender("rmse", 0.90, "min", A), True, "beats"),
    (Contender("rmse", 0.95, "min", A), Contender("rmse", 0.90, "min", A), False,
     "does not beat"),
    (Contender("rmse", 0.90, "min", A), Contender("rmse", 0.90, "min", A), False,
     "does not beat"),  # a tie keeps the champion
    (Contender("rmse", 1.50, "min", B), Contender("rmse", 0.90, "min", A), False,
     "other data (not comparable; policy: keep"),
    (Contender("ndcg@10", 0.30, "max", A), Contender("ndcg@10", 0.20, "max", A), True, "beats"),
    (Contender("ndcg@10", 0.10, "max", A), Contender("ndcg@10", 0.20, "max", A), False,
     "does not beat"),
    (Contender("rmse", 0.9, "min", A), Contender("ndcg@10", 0.2, "max", A), False,
     "selected by ndcg@10"),
    (Contender("rmse", math.nan, "min", A), Contender("rmse", 0.9, "min", A), False,
     "does not beat"),
])
def test_champion_verdict(new, current, wins, reason) -> None:
    won, why = champion_verdict(new, current)
    assert won is wins and reason in why


@pytest.mark.parametrize(("value", "margin", "wins"), [
    (0.885, 0.01, True), (0.895, 0.01, False), (0.890, 0.01, False), (0.899, 0.0, True),
])
def test_the_challenger_must_beat_the_champion_by_the_margin(value, margin, wins) -> None:
    won, why = champion_verdict(Contender("rmse", value, "min", A),
                                Contender("rmse", 0.90, "min", A), margin=margin)
    assert won is wins
    assert ("by more than 0.01" in why) is (margin == 0.01)
    won, _ = champion_verdict(Contender("ndcg@10", 0.90 - value + 0.90, "max", A),
                              Contender("ndcg@10", 0.90, "max", A), margin=margin)
    assert won is wins  # mirrored for a metric where higher is better


def test_incomparable_scores_follow_the_policy() -> None:
    new, old = Contender("rmse", 1.5, "min", B), Contender("rmse", 0.9, "min", A)
    assert champion_verdict(new, old, when_incomparable="promote") == (
        True, "the champion was validated on other data (not comparable; policy: promote)")
    with pytest.raises(ValueError, match="when_incomparable='sometimes'"):
        champion_verdict(new, old, when_incomparable="sometimes")
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        champion_verdict(new, old, margin=-0.1)


def test_is_better_rejects_unknown_mode() -> None:
    assert is_better(1.0, None, "min") and not is_better(math.inf, None, "min")
    with pytest.raises(ValueError, match="mode='low'"):
        is_better(1.0, 2.0, "low")


def _row(model: str, rmse: float | None, ndcg: float, **extra: float) -> dict:
    row = {"model": model, "family": model.split("_")[0], "run_id": f"run-{model}",
           "started": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "test_ndcg_at_10": ndcg, **extra}
    if rmse is not None:
        row["test_rmse"] = rmse
    return row


def test_leaderboard_orders_by_rmse_then_rankers_by_ndcg() -> None:
    table = leaderboard_table([
        _row("popularity_model", None, 0.05),
        _row("mf_model", 0.90, 0.02, train_seconds=3.0),
        _row("other_ranker", None, 0.07),
        _row("bias_model", 0.95, 0.01),
        _row("deepfm_model", 0.88, 0.01),
    ])
    assert table.column("model").to_pylist() == [
        "deepfm_model", "mf_model", "bias_model", "other_ranker", "popularity_model"]
    assert table.column("rank").to_pylist() == [1, 2, 3, 4, 5]
    assert table.column_names[:7] == ["rank", "model", "family", "run_id", "started",
                                      "test_rmse", "test_ndcg_at_10"]
    assert table.column("test_rmse").to_pylist()[3:] == [None, None]
    assert table.column("train_seconds").to_pylist() == [None, 3.0, None, None, None]


def test_leaderboard_of_no_runs_raises() -> None:
    with pytest.raises(ValueError, match="no runs"):
        leaderboard_table([])
