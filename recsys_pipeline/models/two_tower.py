"""Two-tower retrieval model with in-batch negatives and log-Q correction (Yi et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_pipeline.data.order import chronological_order
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.layers import init_linear, init_normal
from recsys_pipeline.models.ranking_base import check_loaded, load_ranking_model
from recsys_pipeline.training.seed import torch_generator


@dataclass(frozen=True)
class TwoTowerConfig:
    """Hyperparameters of :class:`TwoTowerModel`.

    Attributes:
        dim: Embedding width of both towers.
        n_recent: The user tower adds the mean embedding of the user's last ``n_recent``
            training items (0: user id only).
        tower_hidden: Width of a ReLU layer on top of each tower's summed features (0: none).
        normalize: L2-normalise both towers' outputs (cosine scores).
        temperature: Logits are ``u · v / temperature``.
        logq_correction: Subtract ``log q_j`` (item ``j``'s share of training pairs, its
            chance of being an in-batch negative) from the training logits.
        seed: Seeds the weight init.
    """

    dim: int = 64
    n_recent: int = 0
    tower_hidden: int = 0
    normalize: bool = True
    temperature: float = 0.1
    logq_correction: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_recent < 0 or self.tower_hidden < 0:
            raise ValueError(f"dim={self.dim} must be >= 1, n_recent={self.n_recent} and "
                             f"tower_hidden={self.tower_hidden} >= 0")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")


def _tower_top(dim: int, hidden: int, gen: torch.Generator) -> nn.Module:
    if hidden == 0:
        return nn.Identity()
    layers = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
    for layer in (layers[0], layers[2]):
        init_linear(layer, gen)
    return layers


class TwoTowerModel(RatingModel):
    """``score(u, i) = f(u) · g(i) / τ``.

    * user tower ``f(u) = top(E_u[u] + mean_{j ∈ recent(u)} R[j])``;
    * item tower ``g(i) = top(E_i[i] + genres_i G + Y[year_bucket_i])``;

    (``top``: identity or one ReLU layer; outputs L2-normalised when ``normalize``). Trained
    by :meth:`training_loss` with in-batch negatives: for a batch of positive pairs
    ``(u_b, i_b)``, ``logit[a, b] = f(u_a) · g(i_b) / τ − log q_{i_b}``, cross-entropy
    against the diagonal; other pairs of the batch with the same item are masked. Scores are
    for ranking only (``predicts_ratings`` False).
    """

    family: ClassVar[str] = "two_tower"
    config_cls: ClassVar[type] = TwoTowerConfig
    trainable: ClassVar[bool] = False  # trained by training.ranking_loop, not the MSE loop
    predicts_ratings: ClassVar[bool] = False

    def __init__(self, n_users: int, n_items: int, config: TwoTowerConfig | None = None,
                 n_genres: int = 0, n_year_buckets: int = 0) -> None:
        super().__init__(n_users, n_items, config or TwoTowerConfig())
        cfg, gen = self.config, torch_generator(self.config.seed)
        self.n_genres, self.n_year_buckets = int(n_genres), int(n_year_buckets)
        self.user_embedding = nn.Embedding(n_users, cfg.dim)
        self.item_embedding = nn.Embedding(n_items, cfg.dim)
        init_normal(self.user_embedding.weight, 0.1, gen)
        init_normal(self.item_embedding.weight, 0.1, gen)
        if cfg.n_recent:  # row n_items pads short histories and is left out of the mean
            self.recent_embedding = nn.EmbeddingBag(n_items + 1, cfg.dim, mode="mean",
                                                    padding_idx=n_items)
            init_normal(self.recent_embedding.weight, 0.1, gen)
            self.register_buffer("user_recent", torch.full((n_users, cfg.n_recent), n_items))
        if self.n_genres:
            self.genre_embedding = nn.Parameter(torch.zeros(self.n_genres, cfg.dim))
            init_normal(self.genre_embedding, 0.1, gen)
            self.register_buffer("item_genres", torch.zeros(n_items, self.n_genres))
        if self.n_year_buckets:
            self.year_embedding = nn.Embedding(self.n_year_buckets, cfg.dim)
            init_normal(self.year_embedding.weight, 0.1, gen)
            self.register_buffer("item_year", torch.zeros(n_items, dtype=torch.long))
        self.user_top = _tower_top(cfg.dim, cfg.tower_hidden, gen)
        self.item_top = _tower_top(cfg.dim, cfg.tower_hidden, gen)
        self.register_buffer("item_log_q", torch.zeros(n_items))  # [n_items]

    # --- data-dependent buffers ---------------------------------------------------------
    def set_item_features(self, genres: Any = None, year_bucket: Any = None) -> None:
        """Genre multi-hot ``[n_items, n_genres]`` and year bucket ``[n_items]`` per item."""
        for name, value, width in (("item_genres", genres, self.n_genres),
                                   ("item_year", year_bucket, self.n_year_buckets)):
            if value is None:
                continue
            if not width:
                raise ValueError(f"{name}: the model was built without this feature")
            buf = getattr(self, name)
            value = torch.as_tensor(np.asarray(value)).to(buf.device, buf.dtype)
            if value.shape != buf.shape:
                raise ValueError(f"{name} must have shape {tuple(buf.shape)}, got "
                                 f"{tuple(value.shape)}")
            if name == "item_year" and int(value.max()) >= width:
                raise ValueError(f"item_year has bucket {int(value.max())} >= {width}")
            buf.copy_(value)

    def set_recent(self, recent: Any) -> None:
        """Each user's recent item indices, ``n_items`` as padding.  # [n_users, n_recent]"""
        value = torch.as_tensor(np.asarray(recent)).long()
        if not self.config.n_recent or value.shape != self.user_recent.shape:
            raise ValueError(f"recent must be [n_users, n_recent] = "
                             f"[{self.n_users}, {self.config.n_recent}], got {tuple(value.shape)}")
        if int(value.min()) < 0 or int(value.max()) > self.n_items:
            raise ValueError(f"recent holds item_idx outside 0..{self.n_items}")
        self.user_recent.copy_(value)

    def prepare_training(self, data: Any) -> None:
        """Ranking-loop hook: ``log q_j`` from the items of the training pairs."""
        items = data.tensors[1]
        counts = torch.bincount(items, minlength=self.n_items).double().clamp(min=1.0)
        self.item_log_q.copy_((counts / counts.sum()).log().float())

    # --- towers ---------------------------------------------------------------------------
    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """User tower output.  # [B, dim]"""
        h = self.user_embedding(users)
        if self.config.n_recent:
            h = h + self.recent_embedding(self.user_recent[users])
        h = self.user_top(h)
        return F.normalize(h, dim=-1) if self.config.normalize else h

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Item tower output.  # [B, dim]"""
        h = self.item_embedding(items)
        if self.n_genres:
            h = h + self.item_genres[items] @ self.genre_embedding
        if self.n_year_buckets:
            h = h + self.year_embedding(self.item_year[items])
        h = self.item_top(h)
        return F.normalize(h, dim=-1) if self.config.normalize else h

    def user_embeddings(self) -> torch.Tensor:
        """Every user's tower output.  # [n_users, dim]"""
        with torch.no_grad():
            return self.user_vectors(torch.arange(self.n_users, device=self.item_log_q.device))

    def item_embeddings(self) -> torch.Tensor:
        """Every item's tower output, for a nearest-neighbour index.  # [n_items, dim]"""
        with torch.no_grad():
            return self.item_vectors(torch.arange(self.n_items, device=self.item_log_q.device))

    def training_loss(self, batch: tuple[torch.Tensor, ...], step: int) -> torch.Tensor:
        """In-batch softmax over the batch's items with log-Q correction.

        Args:
            batch: ``(users, items)``, positive pairs.  # [B], [B]
            step: Unused.
        """
        users, items = batch
        logits = self.user_vectors(users) @ self.item_vectors(items).T / self.config.temperature
        if self.config.logq_correction:
            logits = logits - self.item_log_q[items][None, :]
        same = items[None, :] == items[:, None]
        same.fill_diagonal_(False)  # the same item elsewhere in the batch is no negative
        logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits.float(), torch.arange(items.numel(), device=items.device))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``f(u) · g(i) / τ`` per pair.  # [B]"""
        dots = (self.user_vectors(users) * self.item_vectors(items)).sum(-1)
        return dots / self.config.temperature

    def _score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_vectors(users) @ self.item_embeddings().T / self.config.temperature

    # --- persistence ----------------------------------------------------------------------
    def init_args(self) -> dict[str, Any]:
        return {"n_genres": self.n_genres, "n_year_buckets": self.n_year_buckets}

    @classmethod
    def from_init_args(cls, n_users: int, n_items: int, config: Any,
                       init_args: dict[str, Any]) -> TwoTowerModel:
        return cls(n_users, n_items, config, **init_args)

    @classmethod
    def load(cls, directory: Any, map_location: str | torch.device = "cpu") -> TwoTowerModel:
        """Load a model saved by :meth:`save`, checking it is a ``cls``."""
        return check_loaded(load_ranking_model(directory, map_location), cls, directory)


def recent_items(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, n_users: int,
                 n_items: int, n_recent: int) -> np.ndarray:
    """Each user's last ``n_recent`` items by time (ties by input order), newest last.

    Args:
        users: ``user_idx`` per interaction.  # [n]
        items: ``item_idx`` per interaction.  # [n]
        timestamps: Integer times per interaction.  # [n]
        n_users: Rows of the result.
        n_items: Padding value (one past the last item).
        n_recent: Columns of the result.

    Returns:
        Left-padded (with ``n_items``) item indices.  # [n_users, n_recent] int64
    """
    order = chronological_order(np.asarray(users), np.asarray(timestamps))
    u, i = np.asarray(users)[order], np.asarray(items)[order]
    size = np.bincount(u, minlength=n_users)
    end = np.cumsum(size)  # one past each user's newest row
    rank_from_end = end[u] - np.arange(u.size) - 1  # 0 = newest
    keep = rank_from_end < n_recent
    out = np.full((n_users, n_recent), n_items, dtype=np.int64)
    out[u[keep], n_recent - 1 - rank_from_end[keep]] = i[keep]
    return out
