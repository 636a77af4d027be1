"""Most-popular baseline: every user gets the items with the most training ratings first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.training.data import RatingData


@dataclass(frozen=True)
class PopularityConfig:
    """Hyperparameters of :class:`PopularityModel`.

    Attributes:
        min_rating: Count only training ratings ``>= min_rating`` (None counts all), so
            "popular" can mean "often liked" rather than "often rated".
    """

    min_rating: float | None = None


class PopularityModel(RatingModel):
    """Non-personalised ranking baseline: ``score(u, i) = count_i``.

    ``count_i = |{(u, i, r) ∈ train : r >= min_rating}|``, the same for every user. Its scores
    are popularity counts, **not ratings** (``predicts_ratings`` is False): use it for top-K
    ranking metrics only; RMSE/MAE of it are meaningless. Not gradient-trained: use :meth:`fit`.
    """

    family: ClassVar[str] = "popularity"
    config_cls: ClassVar[type] = PopularityConfig
    trainable: ClassVar[bool] = False
    predicts_ratings: ClassVar[bool] = False

    def __init__(
        self, n_users: int, n_items: int, config: PopularityConfig | None = None
    ) -> None:
        super().__init__(n_users, n_items, config or PopularityConfig())
        self.register_buffer("counts", torch.zeros(n_items))  # [n_items]

    @classmethod
    def fit(
        cls,
        train: RatingData,
        n_users: int,
        n_items: int,
        config: PopularityConfig | None = None,
    ) -> PopularityModel:
        """Count each item's (qualifying) training ratings.

        Args:
            train: Training interactions.
            n_users: Number of users (only to size the id check).
            n_items: Number of items.
            config: Optional rating threshold.

        Returns:
            The fitted model on ``train.device``, in eval mode.
        """
        if len(train) == 0:
            raise ValueError("PopularityModel.fit: train has no ratings")
        train.validate(n_users=n_users, n_items=n_items)
        model = cls(n_users, n_items, config).to(train.device)
        items = train.items
        if model.config.min_rating is not None:
            items = items[train.ratings >= model.config.min_rating]
        model.counts.copy_(torch.bincount(items, minlength=n_items).float())
        return model.eval()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The popularity count of each item (``users`` only fixes the batch).  # [B]"""
        return self.counts[items]

    def _score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.unsqueeze(0).repeat(users.shape[0], 1)  # [B, n_items]
