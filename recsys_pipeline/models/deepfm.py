"""DeepFM (Guo et al. 2017) over user, item and optional item side-feature fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.layers import (
    check_common,
    init_linear,
    init_module_linears,
    init_normal,
    mlp_tower,
    range_logit,
    to_rating_range,
)
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.seed import torch_generator


@dataclass(frozen=True)
class DeepFMConfig:
    """Hyperparameters of :class:`DeepFMModel`.

    Attributes:
        embedding_dim: Width ``k`` of every field embedding ``v_f``.
        hidden: Deep-part hidden widths.
        dropout: Dropout after each hidden activation.
        norm: ``"none"``, ``"batch"`` or ``"layer"``.
        init_std: Std of the N(0, σ²) embedding / first-order weight init.
        rating_min: Lowest rating (output range).
        rating_max: Highest rating.
        seed: Seeds the parameter init.
    """

    embedding_dim: int = 16
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    norm: str = "none"
    init_std: float = 0.05
    rating_min: float = 0.5
    rating_max: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_common(self.rating_min, self.rating_max, self.hidden, self.dropout, self.norm)
        if self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim={self.embedding_dim} must be > 0")


def year_buckets(years: Any, width: int = 10) -> tuple[torch.Tensor, int]:
    """Bucket release years for :class:`DeepFMModel`: unknown → 0, else ``1 + (y − y_min) // w``.

    Args:
        years: Per-item years (array-like; NaN, None or <= 0 means unknown).  # [n_items]
        width: Bucket width in years.

    Returns:
        ``(bucket_per_item, n_buckets)``; buckets are int64.
    """
    y = np.asarray(years, dtype=np.float64)
    known = np.isfinite(y) & (y > 0)
    buckets = np.zeros(y.shape[0], dtype=np.int64)
    if known.any():
        buckets[known] = 1 + (y[known] - y[known].min()).astype(np.int64) // width
    return torch.from_numpy(buckets), int(buckets.max()) + 1


class _MultiHotField(nn.Module):
    """A multi-valued item field: mean-pooled value embeddings and first-order weights."""

    def __init__(self, n_values: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(n_values, dim))  # [n_values, k]
        self.linear = nn.Parameter(torch.empty(n_values))  # [n_values]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # mean pooling: a field's embedding does not grow with the number of genres/tags
        x = x / x.sum(-1, keepdim=True).clamp_min(1.0)  # [B, n_values]
        return x @ self.embedding, x @ self.linear


class DeepFMModel(RatingModel):
    """DeepFM for ratings with fields user, item and optional item genres / year / tags.

    With field embeddings ``v_f`` (multi-hot fields mean-pool their values' embeddings) and
    first-order weights ``w_f``::

        y_FM   = w_0 + Σ_f w_f + ½ Σ_k [(Σ_f v_fk)² − Σ_f v_fk²]
        y_DNN  = MLP([v_1 ; … ; v_F])
        r̂(u,i) = min + (max − min) · σ(y_FM + y_DNN)

    Side features are item tensors given at construction and kept as buffers, so
    ``score(users, items)`` needs only ids.

    Args:
        n_users: Number of users.
        n_items: Number of items.
        config: Hyperparameters.
        item_genres: Genre multi-hot per item.  # [n_items, n_genres]
        item_year_bucket: Year bucket per item (see :func:`year_buckets`).  # [n_items]
        n_year_buckets: Number of year buckets (default ``max(item_year_bucket) + 1``).
        item_tags: Tag multi-hot (or tag weights) per item.  # [n_items, n_tags]
    """

    family: ClassVar[str] = "deepfm"
    config_cls: ClassVar[type] = DeepFMConfig

    def __init__(
        self,
        n_users: int,
        n_items: int,
        config: DeepFMConfig | None = None,
        *,
        item_genres: torch.Tensor | None = None,
        item_year_bucket: torch.Tensor | None = None,
        n_year_buckets: int | None = None,
        item_tags: torch.Tensor | None = None,
    ) -> None:
        super().__init__(n_users, n_items, config or DeepFMConfig())
        cfg, k = self.config, self.config.embedding_dim
        self.user_embedding = nn.Embedding(n_users, k)
        self.item_embedding = nn.Embedding(n_items, k)
        self.user_linear = nn.Embedding(n_users, 1)
        self.item_linear = nn.Embedding(n_items, 1)
        self.bias = nn.Parameter(torch.zeros(()))
        self.genres = self._multi_hot("item_genres", item_genres, k)
        self.tags = self._multi_hot("item_tags", item_tags, k)
        self.year_embedding: nn.Embedding | None = None
        self.year_linear: nn.Embedding | None = None
        if item_year_bucket is not None:
            buckets = torch.as_tensor(item_year_bucket).long()
            self._check_rows("item_year_bucket", buckets, 1)
            n_buckets = n_year_buckets or int(buckets.max()) + 1
            if int(buckets.min()) < 0 or int(buckets.max()) >= n_buckets:
                raise ValueError(f"item_year_bucket values must lie in [0, {n_buckets})")
            self.register_buffer("item_year_bucket", buckets)
            self.year_embedding = nn.Embedding(n_buckets, k)
            self.year_linear = nn.Embedding(n_buckets, 1)
        n_fields = 2 + sum(f is not None for f in (self.genres, self.tags, self.year_embedding))
        self.tower = mlp_tower(n_fields * k, cfg.hidden, cfg.dropout, cfg.norm)
        self.output = nn.Linear(cfg.hidden[-1] if cfg.hidden else n_fields * k, 1)
        self._reset_parameters()

    def _check_rows(self, name: str, t: torch.Tensor, ndim: int) -> None:
        if t.ndim != ndim or t.shape[0] != self.n_items:
            raise ValueError(f"{name} must have {ndim} dim(s) and n_items={self.n_items} rows, "
                             f"got shape {tuple(t.shape)}")

    def _multi_hot(self, name: str, values: torch.Tensor | None, k: int) -> _MultiHotField | None:
        if values is None:
            return None
        values = torch.as_tensor(values).float()
        self._check_rows(name, values, 2)
        if bool((values < 0).any()):
            raise ValueError(f"{name} must be non-negative (multi-hot or weights)")
        self.register_buffer(name, values)
        return _MultiHotField(values.shape[1], k)

    def _reset_parameters(self) -> None:
        cfg = self.config
        gen = torch_generator(cfg.seed)
        for name, p in self.named_parameters():
            if "embedding" in name or "linear" in name:  # embeddings + first-order weights
                init_normal(p, cfg.init_std, gen)
        init_module_linears(self.tower, gen)
        init_linear(self.output, gen)

    def init_args(self) -> dict[str, Any]:
        """Side-feature shapes, so :func:`load_model` can rebuild the buffers."""
        return {
            "n_genres": None if self.genres is None else self.item_genres.shape[1],
            "n_tags": None if self.tags is None else self.item_tags.shape[1],
            "n_year_buckets": None if self.year_embedding is None
            else self.year_embedding.num_embeddings,
        }

    @classmethod
    def from_init_args(
        cls, n_users: int, n_items: int, config: Any, init_args: dict[str, Any]
    ) -> DeepFMModel:
        """Empty model with side-feature buffers of the saved shapes (filled by the state)."""
        n_genres, n_tags = init_args.get("n_genres"), init_args.get("n_tags")
        n_buckets = init_args.get("n_year_buckets")
        return cls(
            n_users, n_items, config,
            item_genres=None if n_genres is None else torch.zeros(n_items, n_genres),
            item_tags=None if n_tags is None else torch.zeros(n_items, n_tags),
            item_year_bucket=None if n_buckets is None else torch.zeros(n_items, dtype=torch.long),
            n_year_buckets=n_buckets,
        )

    def prepare(self, train: RatingData) -> None:
        """Start the output at the training mean rating (through ``w_0``)."""
        mean = float(train.ratings.double().mean())
        self.bias.data.fill_(range_logit(mean, self.config.rating_min, self.config.rating_max))

    def _fields(
        self, users: torch.Tensor, items: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Field embeddings (list of [B, k]) and the summed first-order term ([B])."""
        vs = [self.user_embedding(users), self.item_embedding(items)]
        first = self.user_linear(users).squeeze(-1) + self.item_linear(items).squeeze(-1)
        for field, name in ((self.genres, "item_genres"), (self.tags, "item_tags")):
            if field is not None:
                v, w = field(getattr(self, name)[items])
                vs.append(v)
                first = first + w
        if self.year_embedding is not None and self.year_linear is not None:
            bucket = self.item_year_bucket[items]
            vs.append(self.year_embedding(bucket))
            first = first + self.year_linear(bucket).squeeze(-1)
        return vs, first

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted rating per pair.  # [B]"""
        vs, first = self._fields(users, items)
        stacked = torch.stack(vs, dim=1)  # [B, n_fields, k]
        fm = 0.5 * (stacked.sum(1).pow(2) - stacked.pow(2).sum(1)).sum(-1)
        deep = self.output(self.tower(stacked.flatten(1))).squeeze(-1)
        logit = self.bias + first + fm + deep
        return to_rating_range(logit, self.config.rating_min, self.config.rating_max)
