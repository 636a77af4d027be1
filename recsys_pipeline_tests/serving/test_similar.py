"""Embedding recommendations (checked by the full model) and cosine-similar movies."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import encode_ids
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.mlp import MLPConfig, MLPModel
from recsys_pipeline.serving.recommend import recommend, seen_items
from recsys_pipeline.serving.similar import embeddings, recommend_by_embedding, similar_items
from recsys_pipeline.serving.tables import EMBEDDING_RECOMMENDATIONS_SCHEMA
from recsys_pipeline_tests.serving.planted import ITEM_IDS, N_ITEMS, N_USERS, USER_IDS, World


@pytest.mark.parametrize(("family", "user", "item"), [
    ("mf", "user_factors", "item_factors"), ("mlp", "user_embedding", "item_embedding"),
    ("neumf", "gmf_user", "gmf_item"), ("deepfm", "user_embedding", "item_embedding"),
])
def test_embeddings_adapter(world: World, family: str, user: str, item: str) -> None:
    model = world.models[family]
    u, i = embeddings(model)
    assert torch.equal(u, getattr(model, user).weight) and u.shape[0] == N_USERS
    assert torch.equal(i, getattr(model, item).weight) and i.shape[0] == N_ITEMS


@pytest.mark.parametrize("family", ["bias", "popularity"])
def test_no_embeddings(world: World, family: str) -> None:
    assert embeddings(world.models[family]) is None
    with pytest.raises(ValueError, match=f"the {family} model has no user/item embeddings; "
                                         "models with them: .*two_tower"):
        similar_items(world.models[family], world.maps, world.movies, int(ITEM_IDS[0]), 3)


@pytest.mark.parametrize("family", ["mf", "neumf", "deepfm"])
def test_recommend_by_embedding_by_hand(world: World, family: str) -> None:
    model, seen = world.models[family], seen_items(world.train, N_USERS)
    u = 6
    table = recommend_by_embedding(model, world.maps, world.movies, int(USER_IDS[u]), 7, seen)
    assert table.schema == EMBEDDING_RECOMMENDATIONS_SCHEMA
    user_emb, item_emb = (t.numpy() for t in embeddings(model))
    rated = seen.mask(torch.tensor([u]), N_ITEMS)[0].numpy()
    sim = item_emb @ user_emb[u]
    sim[rated] = -np.inf
    want = np.argsort(-sim, kind="stable")[:7]
    assert table.column(S.ITEM_ID).to_pylist() == ITEM_IDS[want].tolist()
    np.testing.assert_allclose(table.column("similarity").to_numpy(), sim[want], rtol=1e-5)
    with torch.no_grad():
        full = model.score(torch.full((N_ITEMS,), u), torch.arange(N_ITEMS)).numpy()
    np.testing.assert_allclose(table.column("predicted").to_numpy(), full[want], atol=1e-5)
    full[rated] = -np.inf
    ranks = [1 + int((full > full[i]).sum()) for i in want]
    assert table.column("model_rank").to_pylist() == ranks
    # the model's own first choice has model_rank 1 in recommend()'s order
    top1 = recommend(model, world.maps, world.movies, int(USER_IDS[u]), 1, seen)
    assert full[np.flatnonzero(ITEM_IDS == top1.column(S.ITEM_ID)[0].as_py())[0]] == full.max()


def test_widths_must_match_for_dot_products(world: World) -> None:
    mlp = MLPModel(N_USERS, N_ITEMS, MLPConfig(user_dim=4, item_dim=6, hidden=(8,)))
    with pytest.raises(ValueError, match="width 4 .* width 6"):
        recommend_by_embedding(mlp, world.maps, world.movies, int(USER_IDS[0]), 3,
                               seen_items(world.train, N_USERS))
    assert similar_items(mlp, world.maps, world.movies, int(ITEM_IDS[0]), 3).num_rows == 3


def test_similar_items_planted_cosines() -> None:
    """Items 10, 20, 30, 40, 50 with hand-set factors: cosines to item 10 are known."""
    ratings = pa.Table.from_pylist(
        [{"user_id": 1, "item_id": i, "rating": 3.0, "timestamp": 0} for i in (10, 20, 30, 40, 50)],
        schema=S.RATINGS_SCHEMA)
    movies = pa.Table.from_pylist(
        [{"item_id": i, "title": f"T{i}", "year": None, "genres": []}
         for i in (10, 20, 30, 40, 50)],
        schema=S.MOVIES_SCHEMA)
    _, maps = encode_ids(ratings, movies)
    mf = MFModel(1, 5, MFConfig(n_factors=2))
    with torch.no_grad():
        # cos to item 10 (1, 0): 20 → 0.8 (long vector), 30 → −1, 40 → 0, 50 → 0.6
        mf.item_factors.weight.copy_(torch.tensor([[1.0, 0], [8, 6], [-2, 0], [0, 3], [3, 4]]))
    table = similar_items(mf, maps, movies, 10, 4)
    assert table.column(S.ITEM_ID).to_pylist() == [20, 50, 40, 30]
    np.testing.assert_allclose(table.column("similarity").to_numpy(), [0.8, 0.6, 0.0, -1.0],
                               atol=1e-6)
    assert table.column(S.TITLE).to_pylist() == ["T20", "T50", "T40", "T30"]
    # item 20 (support 1) and item 40 (support 0) are left out; the query's own support
    # does not matter; fewer rows come back when fewer items qualify
    support = np.array([0, 1, 5, 0, 9])
    thin = similar_items(mf, maps, movies, 10, 4, support, min_support=2)
    assert thin.column(S.ITEM_ID).to_pylist() == [50, 30]
    assert thin.column("rank").to_pylist() == [1, 2]
    with pytest.raises(ValueError, match="min_support=2 needs"):
        similar_items(mf, maps, movies, 10, 4, None, min_support=2)
    with pytest.raises(ValueError, match=r"unknown item_id 11: not one of the model's 5 movies "
                                         r"\(no movie of the lake has that movieId\)"):
        similar_items(mf, maps, movies, 11, 2)
    unrated = pa.concat_tables([movies, pa.Table.from_pylist(
        [{"item_id": 60, "title": "T60", "year": None, "genres": []}], schema=S.MOVIES_SCHEMA)])
    with pytest.raises(ValueError, match=r"unknown item_id 60: not one of the model's 5 movies "
                                         r"\('T60' had no training ratings when the model was"):
        similar_items(mf, maps, unrated, 60, 2)
    with pytest.raises(ValueError, match="k=5"):
        similar_items(mf, maps, movies, 10, 5)
