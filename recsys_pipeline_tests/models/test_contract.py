"""Shared contract every model family must pass (like lkpy's ScorerTests, implicit's mixin)."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from recsys_pipeline.evaluation.rating import evaluate_ratings
from recsys_pipeline.models.base import RatingModel, load_model
from recsys_pipeline.models.bias import BiasConfig, BiasModel
from recsys_pipeline.models.deepfm import DeepFMConfig, DeepFMModel
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.mlp import MLPConfig, MLPModel
from recsys_pipeline.models.neumf import NeuMFConfig, NeuMFModel
from recsys_pipeline.models.popularity import PopularityModel
from recsys_pipeline.training.loop import TrainConfig, fit
from recsys_pipeline_tests.models.planted import Planted


class ScorerContract:
    """Shapes, score/score_all agreement, save→load, determinism, unknown ids."""

    def fit_model(self, planted: Planted) -> RatingModel:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def fitted(self, planted: Planted) -> RatingModel:
        return self.fit_model(planted).eval()

    def test_shapes(self, fitted: RatingModel, planted: Planted) -> None:
        users, items = torch.tensor([0, 5, 47]), torch.tensor([0, 29, 3])
        assert fitted.score(users, items).shape == (3,)
        # non-square data: a user/item transpose cannot give [48, 30]
        assert fitted.score_all(torch.arange(planted.n_users)).shape == (48, 30)
        assert fitted.score_all(users).shape == (3, planted.n_items)

    def test_score_all_matches_score(self, fitted: RatingModel, planted: Planted) -> None:
        uu, ii = torch.meshgrid(torch.arange(48), torch.arange(30), indexing="ij")
        with torch.no_grad():
            pairwise = fitted.score(uu.flatten(), ii.flatten()).view(48, 30)
            full = fitted.score_all(torch.arange(48))
        assert torch.isfinite(full).all()
        torch.testing.assert_close(full, pairwise.float(), rtol=1e-5, atol=1e-5)

    def test_save_load_gives_identical_scores(self, fitted: RatingModel, tmp_path) -> None:
        fitted.save(tmp_path / "model")
        loaded = type(fitted).load(tmp_path / "model")
        assert type(loaded) is type(fitted) and loaded.config == fitted.config
        users = torch.arange(48)
        with torch.no_grad():
            assert torch.equal(load_model(tmp_path / "model").score_all(users),
                               fitted.score_all(users))

    def test_same_seed_same_result(self, fitted: RatingModel, planted: Planted) -> None:
        again = self.fit_model(planted).eval()
        for (name, a), (_, b) in zip(fitted.state_dict().items(), again.state_dict().items(),
                                     strict=True):
            assert torch.equal(a, b), name

    @pytest.mark.parametrize(("user", "item", "message"), [
        (48, 0, "unknown user_idx 48"), (-1, 0, "unknown user_idx -1"),
        (0, 30, "unknown item_idx 30"),
    ])
    def test_unknown_ids_raise(self, fitted: RatingModel, user: int, item: int,
                               message: str) -> None:
        with pytest.raises(ValueError, match=message):
            fitted.score(torch.tensor([0, user]), torch.tensor([1, item]))
        if user != 0:
            with pytest.raises(ValueError, match=message):
                fitted.score_all(torch.tensor([user]))


class RatingContract(ScorerContract):
    """Rating models also fit planted data clearly better than the global mean."""

    max_rmse_ratio: ClassVar[float] = 0.7

    def test_beats_global_mean(self, fitted: RatingModel, planted: Planted) -> None:
        rmse = evaluate_ratings(fitted, planted.valid)["rmse"]
        assert rmse < self.max_rmse_ratio * planted.global_mean_rmse()

    def test_predictions_in_rating_range(self, fitted: RatingModel) -> None:
        with torch.no_grad():
            scores = fitted.score_all(torch.arange(48))
        assert float(scores.min()) >= 0.5 and float(scores.max()) <= 5.0


def train(model: RatingModel, planted: Planted, epochs: int = 20, lr: float = 0.03,
          ) -> RatingModel:
    config = TrainConfig(epochs=epochs, batch_size=64, lr=lr, patience=None, device="cpu")
    fit(model, planted.train, planted.valid, config)
    return model


class TestBias(RatingContract):
    max_rmse_ratio = 0.9  # biases only: the planted interaction term stays unexplained

    def fit_model(self, planted: Planted) -> RatingModel:
        return BiasModel.fit(planted.train, 48, 30, BiasConfig(damping_user=2, damping_item=2))


class TestMF(RatingContract):
    def fit_model(self, planted: Planted) -> RatingModel:
        return train(MFModel(48, 30, MFConfig(n_factors=4, l2=0.01, seed=3)), planted)


class TestMLP(RatingContract):
    def fit_model(self, planted: Planted) -> RatingModel:
        config = MLPConfig(user_dim=8, item_dim=8, hidden=(32,), dropout=0.0, seed=3)
        return train(MLPModel(48, 30, config), planted, epochs=25)


class TestMLPBatchNormDropout(RatingContract):
    def fit_model(self, planted: Planted) -> RatingModel:
        config = MLPConfig(user_dim=8, item_dim=8, hidden=(32, 16), dropout=0.1, norm="batch")
        return train(MLPModel(48, 30, config), planted, lr=0.01)


class TestMLPLayerNorm(ScorerContract):
    def fit_model(self, planted: Planted) -> RatingModel:
        config = MLPConfig(user_dim=8, item_dim=8, hidden=(16,), dropout=0.1, norm="layer")
        return train(MLPModel(48, 30, config), planted, epochs=3)


class TestNeuMF(RatingContract):
    def fit_model(self, planted: Planted) -> RatingModel:
        config = NeuMFConfig(gmf_dim=4, mlp_dim=8, hidden=(16, 8), dropout=0.0, seed=1)
        return train(NeuMFModel(48, 30, config), planted)


class TestDeepFMWithSideFeatures(RatingContract):
    def fit_model(self, planted: Planted) -> RatingModel:
        config = DeepFMConfig(embedding_dim=4, hidden=(16,), dropout=0.0)
        tags = (planted.item_genres.roll(1, dims=1) + planted.item_genres) > 0
        model = DeepFMModel(48, 30, config, item_genres=planted.item_genres,
                            item_year_bucket=planted.item_year_bucket, item_tags=tags.float())
        return train(model, planted)


class TestDeepFMIdsOnly(ScorerContract):
    def fit_model(self, planted: Planted) -> RatingModel:
        model = DeepFMModel(48, 30, DeepFMConfig(embedding_dim=4, hidden=(8,)))
        return train(model, planted, epochs=3)


class TestPopularity(ScorerContract):
    def fit_model(self, planted: Planted) -> RatingModel:
        return PopularityModel.fit(planted.train, 48, 30)

    def test_scores_are_training_counts(self, fitted: RatingModel, planted: Planted) -> None:
        counts = torch.bincount(planted.train.items, minlength=30).float()
        assert torch.equal(fitted.score_all(torch.tensor([3, 40]))[1], counts)
