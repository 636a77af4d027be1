"""The core runner: trains every family, evaluates on valid/test, reports through on_epoch."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch

from recsys_pipeline.evaluation.topk import ItemSets
from recsys_pipeline.models.bias import BiasConfig
from recsys_pipeline.models.deepfm import DeepFMConfig, DeepFMModel
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.popularity import PopularityConfig, PopularityModel
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.experiment import (
    EvalConfig,
    ExperimentData,
    ItemFeatures,
    evaluate_split,
    non_finite_parameters,
    run_experiment,
)
from recsys_pipeline.training.loop import TrainConfig
from recsys_pipeline_tests.models.planted import Planted

RANKING = ("precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10", "mrr@10",
           "coverage@10")


def _mean_rmse(data: ExperimentData) -> float:
    mu = data.train.ratings.double().mean()
    return float((data.test.ratings.double() - mu).pow(2).mean().sqrt())


def test_mf_beats_global_mean_and_reports_every_epoch(planted_data: ExperimentData) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    result = run_experiment(
        planted_data, MFConfig(n_factors=4, l2=0.01, seed=3),
        TrainConfig(epochs=20, batch_size=64, lr=0.03, patience=None, device="cpu"),
        on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)))
    assert isinstance(result.model, MFModel) and not result.model.training
    assert result.test["rmse"] < 0.7 * _mean_rmse(planted_data)
    assert result.valid["rmse"] == pytest.approx(min(h["valid_rmse"] for h in result.history))
    assert [e for e, _ in seen] == list(range(1, 21)) and len(result.history) == 20
    assert {"train_loss", "valid_loss", "valid_rmse", "samples_per_s"} <= set(seen[0][1])
    for split in (result.valid, result.test):
        assert {"rmse", "mae", "fcp", *RANKING} <= set(split)
        assert all(0.0 <= split[k] <= 1.0 for k in RANKING)
    assert result.test["n_ratings"] == len(planted_data.test)
    assert (result.selection_metric, result.selection_mode) == ("rmse", "min")


def test_bias_is_one_epoch_and_popularity_has_no_rating_metrics(
        planted_data: ExperimentData) -> None:
    calls: list[int] = []
    bias = run_experiment(planted_data, BiasConfig(), TrainConfig(device="cpu"),
                          on_epoch=lambda epoch, metrics: calls.append(epoch))
    assert calls == [1] and bias.best_epoch == 1 and len(bias.history) == 1
    assert bias.history[0]["valid_rmse"] == pytest.approx(bias.valid["rmse"])
    assert bias.test["rmse"] < _mean_rmse(planted_data)

    pop = run_experiment(planted_data, PopularityConfig(), TrainConfig(device="cpu"),
                         on_epoch=lambda epoch, metrics: calls.append(epoch))
    assert isinstance(pop.model, PopularityModel) and pop.history == [] and calls == [1]
    assert "rmse" not in pop.test and "ndcg@10" in pop.test
    assert (pop.selection_metric, pop.selection_mode) == ("ndcg@10", "max")


def test_deepfm_gets_the_side_features(planted: Planted, planted_data: ExperimentData) -> None:
    features = ItemFeatures(genres=planted.item_genres, year_bucket=planted.item_year_bucket,
                            n_year_buckets=4)
    data = ExperimentData(planted_data.train, planted_data.valid, planted_data.test,
                          planted_data.n_users, planted_data.n_items, features)
    result = run_experiment(data, DeepFMConfig(embedding_dim=4, hidden=(8,)),
                            TrainConfig(epochs=2, batch_size=128, device="cpu"))
    assert isinstance(result.model, DeepFMModel)
    assert torch.equal(result.model.item_genres, planted.item_genres)
    assert result.model.year_embedding is not None and result.model.tags is None


def _data(rows: list[tuple[int, int, float]]) -> RatingData:
    users, items, ratings = zip(*rows, strict=True)
    return RatingData.from_arrays(list(users), list(items), list(ratings))


def test_test_ranking_excludes_train_and_valid_items() -> None:
    # item counts in train: 0 -> 3, 1 -> 2, 2 -> 1; user 0 rated nothing in train, item 0 in
    # valid and item 1 in test. Popularity ranks 0 > 1 > 2, so at K=1 user 0 is shown item 1
    # only when its valid item 0 is excluded.
    train = _data([(1, 0, 5), (2, 0, 5), (3, 0, 5), (1, 1, 5), (2, 1, 5), (3, 2, 5)])
    valid = _data([(0, 0, 5.0), (1, 2, 4.0)])
    test = _data([(0, 1, 5.0), (2, 2, 4.0)])
    data = ExperimentData(train, valid, test, n_users=4, n_items=3)
    result = run_experiment(data, PopularityConfig(), TrainConfig(device="cpu"),
                            EvalConfig(ks=(1,)))
    assert result.test["precision@1"] == 1.0  # both test users hit at rank 1
    # valid excludes train only: user 0 is shown item 0, user 1 (train 0, 1) item 2: both hit
    assert result.valid["precision@1"] == 1.0
    # excluding train only, user 0 would be shown its valid item 0 in test: a miss
    train_only = ItemSets.from_data(train, 4)
    assert evaluate_split(result.model, test, train_only, EvalConfig(ks=(1,)))[
        "precision@1"] == pytest.approx(0.5)


def test_non_finite_parameters_names_the_tensor() -> None:
    model = MFModel(3, 4, MFConfig(n_factors=2))
    assert non_finite_parameters(model) == {}
    with torch.no_grad():
        model.item_factors.weight[1, 0] = math.nan
        model.user_bias.weight[0, 0] = math.inf
    assert non_finite_parameters(model) == {"item_factors.weight": 1, "user_bias.weight": 1}


def test_unknown_config_and_empty_split_raise(planted_data: ExperimentData) -> None:
    with pytest.raises(ValueError, match="no model for config type dict"):
        run_experiment(planted_data, {"n_factors": 4})
    empty = planted_data.test.subset(torch.zeros(len(planted_data.test), dtype=torch.bool))

    def table(d: RatingData) -> pa.Table:
        return pa.table({"user_idx": d.users.numpy(), "item_idx": d.items.numpy(),
                         "rating": d.ratings.numpy()})

    with pytest.raises(ValueError, match="split 'test' has no ratings"):
        ExperimentData.from_tables(table(planted_data.train), table(planted_data.valid),
                                   table(empty), 48, 30)
