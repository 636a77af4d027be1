"""DeepRecommender-style autoencoder: masked loss, rating prediction, config errors."""

from __future__ import annotations

import pytest
import scipy.sparse as sp
import torch

from recsys_pipeline.evaluation.rating import evaluate_ratings
from recsys_pipeline.models.autoencoder import AutoEncoderConfig, AutoEncoderModel, masked_mse
from recsys_pipeline.training.ranking_data import CSRTensors
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking
from recsys_pipeline_tests.models.planted import make_planted


def test_masked_mse_ignores_unobserved_entries() -> None:
    target = torch.tensor([[4.0, 0.0, 2.0], [0.0, 5.0, 0.0]])
    pred = torch.tensor([[3.0, 9.0, 2.5], [-7.0, 4.0, 1.0]], requires_grad=True)
    loss = masked_mse(pred, target)
    # observed: (3-4)², (2.5-2)², (4-5)² -> (1 + 0.25 + 1) / 3
    assert float(loss.detach()) == pytest.approx(2.25 / 3)
    loss.backward()
    unobserved = target == 0
    assert torch.all(pred.grad[unobserved] == 0) and torch.all(pred.grad[~unobserved] != 0)
    other = pred.detach().clone()
    other[unobserved] = torch.tensor([100.0, -3.0, 42.0])
    assert float(masked_mse(other, target)) == pytest.approx(float(loss.detach()))


def test_unobserved_weight_counts_zeros_as_targets() -> None:
    target = torch.tensor([[1.0, 0.0]])
    pred = torch.tensor([[1.0, 2.0]])
    # weights (1, 0.5): (0 + 0.5 * 4) / 1.5
    assert float(masked_mse(pred, target, unobserved_weight=0.5)) == pytest.approx(2.0 / 1.5)


def test_predicts_held_out_ratings_far_better_than_the_mean() -> None:
    planted = make_planted()
    t = planted.train
    train = sp.csr_matrix((t.ratings.numpy(), (t.users.numpy(), t.items.numpy())),
                          shape=(planted.n_users, planted.n_items))
    model = AutoEncoderModel(planted.n_users, planted.n_items,
                             AutoEncoderConfig(hidden=(64, 32), dropout=0.5, seed=1))
    config = RankingTrainConfig(epochs=200, batch_size=16, lr=3e-3, patience=None,
                                monitor="train_loss", mode="min", device="cpu")
    fit_ranking(model, CSRTensors.from_scipy(train), None, config)
    metrics = evaluate_ratings(model, planted.valid)
    assert metrics["rmse"] < 0.5 * planted.global_mean_rmse()
    pred = model.score(planted.valid.users, planted.valid.items)
    assert float(pred.min()) >= 0.5 and float(pred.max()) <= 5.0  # clamped in eval


@pytest.mark.parametrize(("field", "value", "message"), [
    ("hidden", (), "code layer"), ("activation", "gelu", "activation"),
    ("dropout", 1.0, "dropout"), ("unobserved_weight", -0.1, "unobserved_weight"),
])
def test_bad_config_raises(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoEncoderConfig(**{field: value})
