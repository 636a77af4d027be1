"""DeepFM side features: year bucketing, shape checks, and that the features are used."""

from __future__ import annotations

import math

import pytest
import torch

from recsys_pipeline.models.deepfm import DeepFMConfig, DeepFMModel, year_buckets
from recsys_pipeline.training.loop import TrainConfig, fit
from recsys_pipeline_tests.models.planted import Planted


def test_year_buckets_by_hand() -> None:
    # known years 1995, 2003, 1971; min 1971, width 10: 1 + 24//10 = 3, 1 + 32//10 = 4, 1
    buckets, n = year_buckets([1995, math.nan, 2003, 1971, 0], width=10)
    assert buckets.tolist() == [3, 0, 4, 1, 0] and n == 5


def test_side_feature_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="item_genres must have 2 dim"):
        DeepFMModel(3, 4, item_genres=torch.ones(5, 2))
    with pytest.raises(ValueError, match=r"item_year_bucket values must lie in \[0, 2\)"):
        DeepFMModel(3, 4, item_year_bucket=torch.tensor([0, 1, 2, 0]), n_year_buckets=2)


def test_genre_field_learns_and_drives_scores(planted: Planted) -> None:
    model = DeepFMModel(48, 30, DeepFMConfig(embedding_dim=4, hidden=(16,), dropout=0.0),
                        item_genres=planted.item_genres)
    before = model.genres.embedding.detach().clone()
    fit(model, planted.train, planted.valid,
        TrainConfig(epochs=8, batch_size=64, lr=0.03, patience=None, device="cpu"))
    assert not torch.allclose(model.genres.embedding, before)  # the genre field got gradient
    users = torch.arange(48)
    with torch.no_grad():
        scores = model.score_all(users)
        model.item_genres.zero_()  # same ids, genres removed: predictions must move
        assert (model.score_all(users) - scores).abs().max() > 1e-3
