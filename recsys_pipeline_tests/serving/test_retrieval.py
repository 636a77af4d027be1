"""Retrieval vectors: inner products that rank every user's items like the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.models.ease import EASEConfig, EASEModel
from recsys_pipeline.models.two_tower import TwoTowerConfig, TwoTowerModel
from recsys_pipeline.serving.retrieval import (
    ITEM_VECTORS_FILE,
    USER_VECTORS_FILE,
    RetrievalVectors,
    read_vectors,
    retrieval_vectors,
    write_retrieval_vectors,
)
from recsys_pipeline_tests.serving.planted import ITEM_IDS, N_ITEMS, N_USERS, USER_IDS, World


def _all_scores(model) -> np.ndarray:
    with torch.no_grad():
        return model.score_all(torch.arange(model.n_users)).numpy()  # [n_users, n_items]


def _assert_ranks_like(found: RetrievalVectors, scores: np.ndarray) -> None:
    """Along each user's inner-product order the model's scores never rise."""
    inner = found.users @ found.items.T
    order = np.argsort(-inner, axis=1, kind="stable")
    along = np.take_along_axis(scores, order, axis=1)
    assert (np.diff(along, axis=1) <= 1e-5).all()


def test_mf_vectors_are_factors_plus_the_item_bias(world: World) -> None:
    model = world.models["mf"]
    found = retrieval_vectors(model)
    assert found.users.dtype == np.float32 and found.users.shape == (N_USERS, 5)
    assert found.items.shape == (N_ITEMS, 5) and (found.users[:, -1] == 1).all()
    np.testing.assert_array_equal(found.items[:, -1], model.item_bias.weight.detach()[:, 0])
    scores = _all_scores(model)
    _assert_ranks_like(found, scores)
    # off the clamp the score is the inner product plus one constant per user (mean + b_u)
    inner = found.users @ found.items.T
    offset = (model.global_mean + model.user_bias.weight.detach()[:, 0]).numpy()
    free = (scores > 0.5) & (scores < 5.0)
    assert free.mean() > 0.5
    np.testing.assert_allclose((scores - inner)[free], np.broadcast_to(
        offset[:, None], scores.shape)[free], atol=1e-5)


@pytest.mark.parametrize("config", [TwoTowerConfig(dim=8, temperature=0.2, seed=3),
                                    TwoTowerConfig(dim=8, normalize=False, tower_hidden=6,
                                                   n_recent=2, seed=4)])
def test_two_tower_vectors_are_its_towers(config: TwoTowerConfig) -> None:
    model = TwoTowerModel(N_USERS, N_ITEMS, config, n_genres=3, n_year_buckets=4)
    rng = np.random.default_rng(0)
    model.set_item_features((rng.random((N_ITEMS, 3)) < 0.4).astype(np.float32),
                            rng.integers(0, 4, N_ITEMS))
    if config.n_recent:
        model.set_recent(rng.integers(0, N_ITEMS + 1, (N_USERS, 2)))
    found = retrieval_vectors(model.eval())
    assert found.users.shape == (N_USERS, 8) and found.items.shape == (N_ITEMS, 8)
    np.testing.assert_allclose(found.users @ found.items.T / config.temperature,
                               _all_scores(model), rtol=1e-5, atol=1e-5)
    if config.normalize:
        np.testing.assert_allclose(np.linalg.norm(found.items, axis=1), 1.0, rtol=1e-5)
    assert f"temperature ({config.temperature:g})" in found.score


@pytest.mark.parametrize(("family", "why"), [
    ("mlp", "non-linear layers"), ("neumf", "non-linear layers"), ("deepfm", "feature crosses"),
    ("bias", "ranks every user's items alike"), ("popularity", "alike")])
def test_families_without_such_vectors_say_why(world: World, family: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"the {family} model has no vectors .*{why}.*"
                                         "two_tower and mf have"):
        retrieval_vectors(world.models[family])


def test_fold_in_models_have_no_user_vectors() -> None:
    ease = EASEModel.fit(sp.csr_matrix(np.eye(5, dtype=np.float32)), EASEConfig(), device="cpu")
    with pytest.raises(ValueError, match="the ease model .*keeps no vector per user"):
        retrieval_vectors(ease)


def test_files_carry_original_ids(world: World, tmp_path: Path) -> None:
    found = retrieval_vectors(world.models["mf"])
    users_path, items_path = write_retrieval_vectors(found, world.maps, tmp_path)
    assert (users_path.name, items_path.name) == (USER_VECTORS_FILE, ITEM_VECTORS_FILE)
    table = pq.read_table(items_path)
    assert table.column_names == [S.ITEM_ID, "vector"]
    vector_type = table.schema.field("vector").type
    assert vector_type.list_size == 5 and vector_type.value_type == "float32"
    user_ids, users = read_vectors(users_path)
    item_ids, items = read_vectors(items_path)
    np.testing.assert_array_equal(user_ids, USER_IDS)
    np.testing.assert_array_equal(item_ids, ITEM_IDS)
    np.testing.assert_array_equal(users, found.users)
    np.testing.assert_array_equal(items, found.items)
    assert sorted(p.name for p in tmp_path.iterdir()) == [ITEM_VECTORS_FILE, USER_VECTORS_FILE]

    short = RetrievalVectors(found.users[:3], found.items, found.score)
    with pytest.raises(ValueError, match=f"3 user and {N_ITEMS} item vectors but the id maps "
                                         f"have {N_USERS} users"):
        write_retrieval_vectors(short, world.maps, tmp_path / "other")
    assert not (tmp_path / "other").exists()
