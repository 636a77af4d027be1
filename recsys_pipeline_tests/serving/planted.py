"""Planted rating data in ORIGINAL ids, with trained models of every family, for serving tests.

40 users × 64 items (non-square), ``r = 3.3 + b_u + b_i + p_u · q_i + ε`` with rank-2 factors
of different user / item scales, clipped to [0.5, 5]. User ids are ``1000 + 3u`` and item ids
``7 + 11i`` (never equal to their indices), so an id / index mix-up fails the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps, encode_ids
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.bias import BiasConfig, BiasModel
from recsys_pipeline.models.deepfm import DeepFMConfig, DeepFMModel, year_buckets
from recsys_pipeline.models.mf import MFConfig, MFModel
from recsys_pipeline.models.mlp import MLPConfig, MLPModel
from recsys_pipeline.models.neumf import NeuMFConfig, NeuMFModel
from recsys_pipeline.models.popularity import PopularityModel
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.loop import TrainConfig, fit

N_USERS, N_ITEMS = 40, 64
GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
USER_IDS = 1000 + 3 * np.arange(N_USERS)
ITEM_IDS = 7 + 11 * np.arange(N_ITEMS)


@dataclass
class World:
    """Tables in original ids, the encoded splits and the trained models."""

    movies: pa.Table
    maps: IdMaps
    train: pa.Table  # schema.ENCODED_RATINGS_SCHEMA
    test: pa.Table
    truth: np.ndarray  # noiseless ratings  # [n_users, n_items]
    models: dict[str, RatingModel]

    def data(self, table: pa.Table) -> RatingData:
        return RatingData.from_table(table, n_users=N_USERS, n_items=N_ITEMS)


def make_movies() -> pa.Table:
    titles = [f"Film {i} ({1950 + i})" for i in range(N_ITEMS)]
    titles[3] = "Alien (1979)"
    titles[4] = "Alien (1986)"  # the same name twice: only the year tells them apart
    titles[5] = "Heat, The (1995)"
    genres = [[GENRES[i % 6], GENRES[(i * 5 + 1) % 6]] if i % 9 else [] for i in range(N_ITEMS)]
    years = [int(t[-5:-1]) for t in titles]
    return pa.Table.from_arrays(
        [pa.array(ITEM_IDS, S.ID_TYPE), pa.array(titles), pa.array(years, pa.int16()),
         pa.array(genres, pa.list_(pa.string()))], schema=S.MOVIES_SCHEMA)


def make_ratings(seed: int = 3) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.9, (N_USERS, 2))
    q = rng.normal(0, 0.7, (N_ITEMS, 2)) * np.array([1.0, 0.6])
    truth = 3.3 + rng.normal(0, 0.3, N_USERS)[:, None] + rng.normal(0, 0.4, N_ITEMS) + p @ q.T
    truth = np.clip(truth, 0.5, 5.0)
    users, items = np.nonzero(rng.random((N_USERS, N_ITEMS)) < 0.55)
    ratings = np.clip(truth[users, items] + rng.normal(0, 0.1, users.size), 0.5, 5.0)
    times = 1_000_000_000 + rng.permutation(users.size) * 60
    table = pa.Table.from_arrays(
        [pa.array(USER_IDS[users], S.ID_TYPE), pa.array(ITEM_IDS[items], S.ID_TYPE),
         pa.array(ratings, S.RATING_TYPE), pa.array(times, pa.int64()).cast(S.TIMESTAMP_TYPE)],
        schema=S.RATINGS_SCHEMA)
    return table, truth


def _train_models(train: RatingData, valid: RatingData, movies: pa.Table) -> dict:
    cfg = TrainConfig(epochs=400, batch_size=len(train), lr=0.03, patience=None, device="cpu",
                      restore_best=False)
    mf = MFModel(N_USERS, N_ITEMS, MFConfig(n_factors=4, l2=0.02, init_std=0.1, seed=1))
    fit(mf, train, valid, cfg)
    models: dict[str, RatingModel] = {
        "bias": BiasModel.fit(train, N_USERS, N_ITEMS, BiasConfig(damping_user=3.0)),
        "popularity": PopularityModel.fit(train, N_USERS, N_ITEMS),
        "mf": mf.eval(),
    }
    neural = TrainConfig(epochs=150, batch_size=256, lr=0.01, patience=None, device="cpu",
                         restore_best=False)
    genre_hot = np.zeros((N_ITEMS, len(GENRES)), dtype=np.float32)
    for i, gs in enumerate(movies.column(S.GENRES).to_pylist()):
        genre_hot[i, [GENRES.index(g) for g in gs]] = 1.0
    buckets, n_buckets = year_buckets(movies.column(S.YEAR).to_numpy().astype(float))
    builds = {
        "mlp": MLPModel(N_USERS, N_ITEMS, MLPConfig(user_dim=8, item_dim=8, hidden=(16,),
                                                    dropout=0.0)),
        "neumf": NeuMFModel(N_USERS, N_ITEMS, NeuMFConfig(gmf_dim=8, mlp_dim=8, hidden=(16,),
                                                          dropout=0.0)),
        "deepfm": DeepFMModel(N_USERS, N_ITEMS, DeepFMConfig(embedding_dim=8, hidden=(16,),
                                                             dropout=0.0),
                              item_genres=torch.from_numpy(genre_hot),
                              item_year_bucket=buckets, n_year_buckets=n_buckets),
    }
    for name, model in builds.items():
        fit(model, train, valid, neural)
        models[name] = model.eval()
    return models


def make_world() -> World:
    ratings, truth = make_ratings()
    movies = make_movies()
    encoded, maps = encode_ids(ratings, movies)
    test_mask = np.random.default_rng(11).random(encoded.num_rows) < 0.15
    train = encoded.filter(pa.array(~test_mask))
    test = encoded.filter(pa.array(test_mask))
    world = World(movies, maps, train, test, truth, {})
    world.models = _train_models(world.data(train), world.data(test), movies)
    return world
