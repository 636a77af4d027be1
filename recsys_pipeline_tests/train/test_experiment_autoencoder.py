"""The rating autoencoder through the core runner: trained on the users' train rating rows
(masked MSE on observed ratings), early-stopped on valid RMSE, evaluated like the rating
models."""

from __future__ import annotations

import pytest
import torch

from recsys_pipeline.models.autoencoder_rating import (
    AutoEncoderRatingConfig,
    AutoEncoderRatingModel,
)
from recsys_pipeline.training.experiment import ExperimentData, run_experiment
from recsys_pipeline.training.loop import TrainConfig

RANKING = ("precision@10", "recall@10", "ndcg@10", "hit_rate@10", "coverage@10")


def _mean_rmse(data: ExperimentData) -> float:
    mu = data.train.ratings.double().mean()
    return float((data.test.ratings.double() - mu).pow(2).mean().sqrt())


def test_rating_autoencoder_beats_global_mean(planted_data: ExperimentData) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    result = run_experiment(
        planted_data, AutoEncoderRatingConfig(hidden=(16,), dropout=0.2, seed=1),
        TrainConfig(epochs=60, batch_size=8, lr=1e-2, patience=None, device="cpu"),
        on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)))
    model = result.model
    assert isinstance(model, AutoEncoderRatingModel) and not model.training
    assert result.test["rmse"] < 0.8 * _mean_rmse(planted_data)
    # selected by valid RMSE: the kept weights are the best epoch's
    assert result.valid["rmse"] == pytest.approx(min(h["valid_rmse"] for h in result.history))
    assert result.history[result.best_epoch - 1]["valid_rmse"] == pytest.approx(
        result.valid["rmse"])
    assert [e for e, _ in seen] == list(range(1, 61))
    assert {"train_loss", "valid_loss", "valid_rmse", "valid_mae"} <= set(seen[0][1])
    for split in (result.valid, result.test):
        assert {"rmse", "mae", "fcp", *RANKING} <= set(split)
    assert (result.selection_metric, result.selection_mode) == ("rmse", "min")
    # the stored history is the whole train matrix: every user scored from their train row
    history = model.history()
    assert history.n_rows == planted_data.n_users
    assert int(history.indptr[-1]) == len(planted_data.train)
    row = history.dense_rows(torch.tensor([3]))
    assert torch.allclose(model.score_all(torch.tensor([3])), model.score_all_from(row))
    scores = model.score_all(torch.arange(planted_data.n_users))
    assert float(scores.min()) >= 0.5 and float(scores.max()) <= 5.0  # clamped


def test_rating_autoencoder_early_stops_on_valid_rmse(planted_data: ExperimentData) -> None:
    result = run_experiment(
        planted_data, AutoEncoderRatingConfig(hidden=(16,), dropout=0.2, seed=1),
        TrainConfig(epochs=200, batch_size=8, lr=3e-2, patience=2, device="cpu"))
    assert len(result.history) < 200
    assert len(result.history) == result.best_epoch + 2
