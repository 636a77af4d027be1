"""Planted-structure rating data with a known answer, shared by model and training tests.

The matrix is non-square (48 users × 30 items) and asymmetric (user and item effects have
different scales and item effects follow genres), so a user/item transpose breaks shapes and
fits alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys_pipeline.training.data import RatingData

N_USERS, N_ITEMS, N_GENRES = 48, 30, 5


@dataclass(frozen=True)
class Planted:
    """Train/valid splits plus the item side features that generated them."""

    train: RatingData
    valid: RatingData
    n_users: int
    n_items: int
    item_genres: torch.Tensor  # [n_items, n_genres] multi-hot
    item_year_bucket: torch.Tensor  # [n_items]

    def global_mean_rmse(self) -> float:
        """RMSE on valid of always predicting the training mean (the bar to beat)."""
        mu = self.train.ratings.double().mean()
        return float((self.valid.ratings.double() - mu).pow(2).mean().sqrt())


def make_planted(seed: int = 7, density: float = 0.6, noise: float = 0.1) -> Planted:
    """``r = 3.2 + b_u + genre_effect(i) + b_i + u·v + ε``, clipped to [0.5, 5], 80/20 split."""
    rng = np.random.default_rng(seed)
    genres = (rng.random((N_ITEMS, N_GENRES)) < 0.3).astype(np.float32)
    genres[np.arange(N_ITEMS), rng.integers(0, N_GENRES, N_ITEMS)] = 1.0  # >= 1 genre each
    genre_effect = np.array([0.9, -0.8, 0.4, -0.3, 0.1])
    item_effect = genres @ genre_effect / genres.sum(1) + rng.normal(0, 0.15, N_ITEMS)
    user_effect = rng.normal(0, 0.4, N_USERS)
    factors_u = rng.normal(0, 0.7, (N_USERS, 2))
    factors_i = rng.normal(0, 0.9, (N_ITEMS, 2))
    full = 3.2 + user_effect[:, None] + item_effect[None, :] + factors_u @ factors_i.T
    users, items = np.nonzero(rng.random((N_USERS, N_ITEMS)) < density)
    ratings = np.clip(full[users, items] + rng.normal(0, noise, users.size), 0.5, 5.0)
    order = rng.permutation(users.size)
    cut = int(0.8 * users.size)
    tr, va = order[:cut], order[cut:]

    def part(idx: np.ndarray) -> RatingData:
        return RatingData.from_arrays(users[idx].astype(np.int32), items[idx].astype(np.int32),
                                      ratings[idx].astype(np.float32),
                                      n_users=N_USERS, n_items=N_ITEMS)

    years = torch.from_numpy(rng.integers(0, 4, N_ITEMS))
    return Planted(part(tr), part(va), N_USERS, N_ITEMS, torch.from_numpy(genres), years)
