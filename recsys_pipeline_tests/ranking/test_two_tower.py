"""Two-tower retrieval: planted blocks, log-Q corrected in-batch loss, embeddings export,
features and recent items, save/load and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys_pipeline.models.ranking_base import load_ranking_model
from recsys_pipeline.models.two_tower import TwoTowerConfig, TwoTowerModel, recent_items
from recsys_pipeline.training.ranking_data import pairs_from_csr
from recsys_pipeline.training.ranking_loop import RankingTrainConfig, fit_ranking
from recsys_pipeline_tests.ranking.planted import N_ITEMS, N_USERS, Blocks
from recsys_pipeline_tests.ranking.test_foldin import top1_of_train_users

N_GENRES, N_YEARS = 3, 4


def fit_two_tower(blocks: Blocks, config: TwoTowerConfig) -> TwoTowerModel:
    rng = np.random.default_rng(0)
    model = TwoTowerModel(N_USERS, N_ITEMS, config, n_genres=N_GENRES, n_year_buckets=N_YEARS)
    model.set_item_features((rng.random((N_ITEMS, N_GENRES)) < 0.4).astype(np.float32),
                            rng.integers(0, N_YEARS, N_ITEMS))
    if config.n_recent:
        users, items = blocks.train.nonzero()
        model.set_recent(recent_items(users, items, np.arange(users.size), N_USERS, N_ITEMS,
                                      config.n_recent))
    train = RankingTrainConfig(epochs=25, batch_size=64, lr=1e-2, patience=None,
                               monitor="train_loss", mode="min", device="cpu", seed=5)
    fit_ranking(model, pairs_from_csr(blocks.train), None, train)
    return model


@pytest.fixture(scope="module", params=[
    TwoTowerConfig(dim=16, seed=1),
    TwoTowerConfig(dim=16, n_recent=3, tower_hidden=16, seed=1),
], ids=["id-features", "recent-mlp"])
def fitted(request: pytest.FixtureRequest, blocks: Blocks) -> TwoTowerModel:
    return fit_two_tower(blocks, request.param)


def test_ranks_missing_block_item_first(fitted: TwoTowerModel, blocks: Blocks) -> None:
    assert (top1_of_train_users(fitted, blocks) == blocks.missing).all()


def test_scores_are_tower_dot_products(fitted: TwoTowerModel) -> None:
    users = torch.tensor([0, 9, 44])
    emb = fitted.item_embeddings()
    assert emb.shape == (N_ITEMS, 16)  # non-square data: items, not users
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(N_ITEMS))
    expected = fitted.user_vectors(users) @ emb.T / fitted.config.temperature
    full = fitted.score_all(users)
    torch.testing.assert_close(full, expected)
    pairs = fitted.score(users, torch.tensor([1, 2, 26]))
    torch.testing.assert_close(pairs, full[torch.arange(3), torch.tensor([1, 2, 26])])


def test_save_load_and_seed(fitted: TwoTowerModel, blocks: Blocks, tmp_path) -> None:
    fitted.save(tmp_path / "m")
    loaded = TwoTowerModel.load(tmp_path / "m")
    users = torch.arange(N_USERS)
    assert torch.equal(loaded.score_all(users), fitted.score_all(users))
    assert torch.equal(load_ranking_model(tmp_path / "m").item_embeddings(),
                       fitted.item_embeddings())
    again = fit_two_tower(blocks, fitted.config)
    for (name, a), (_, b) in zip(fitted.state_dict().items(), again.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_in_batch_loss_subtracts_log_q_and_masks_repeats() -> None:
    model = TwoTowerModel(3, 4, TwoTowerConfig(dim=2, normalize=False, temperature=0.5))
    users, items = torch.tensor([0, 1, 2]), torch.tensor([1, 3, 1])
    model.prepare_training(type("Pairs", (), {"tensors": (users, items)})())
    q = torch.tensor([1.0, 2.0, 1.0, 1.0]) / 5  # counts clamped to >= 1 over 4 items
    torch.testing.assert_close(model.item_log_q, q.log())
    u, v = model.user_vectors(users), model.item_vectors(items)
    logits = u @ v.T / 0.5 - q.log()[items][None, :]
    logits[0, 2] = logits[2, 0] = float("-inf")  # item 1 twice: not a negative of itself
    expected = F.cross_entropy(logits, torch.arange(3))
    torch.testing.assert_close(model.training_loss((users, items), 0), expected)


def test_recent_items_by_hand() -> None:
    users = np.array([0, 1, 0, 0, 1, 0])
    items = np.array([5, 6, 7, 8, 9, 2])
    times = np.array([10, 1, 30, 20, 2, 40])
    recent = recent_items(users, items, times, n_users=3, n_items=10, n_recent=3)
    # user 0 by time: 5, 8, 7, 2 -> last three 8, 7, 2; user 1: 6, 9; user 2: none
    assert recent.tolist() == [[8, 7, 2], [10, 6, 9], [10, 10, 10]]


def test_feature_shape_errors() -> None:
    model = TwoTowerModel(3, 4, TwoTowerConfig(dim=2), n_genres=2)
    with pytest.raises(ValueError, match=r"item_genres must have shape \(4, 2\)"):
        model.set_item_features(genres=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="item_year: the model was built without"):
        model.set_item_features(year_bucket=np.zeros(4))
    with pytest.raises(ValueError, match="recent must be"):
        model.set_recent(np.zeros((3, 2)))
