"""Scoring a model on another model's validation rows (the champion gate's re-scoring).

When the data moved on (new ratings, new users), the champion was validated on other rows
than the challenger. To compare them on the same data, the challenger's validation rows are
translated through original MovieLens ids into the champion's index space; the rows both
models know (users and items the champion was trained with) are scored by both.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys_pipeline import schema
from recsys_pipeline.data.encode import IdMaps, find_positions
from recsys_pipeline.evaluation.rating import mae, rmse

PAIR_METRICS = {"rmse": rmse, "mae": mae}


def known_pairs(user_ids: np.ndarray, item_ids: np.ndarray, maps: IdMaps
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which ``(user_id, item_id)`` rows ``maps`` knows, and their indices there.

    Args:
        user_ids: Original user ids.  # [n]
        item_ids: Original item ids.  # [n]
        maps: The other model's id maps (row ``i`` holds index ``i``).

    Returns:
        ``(mask, user_idx, item_idx)``: mask ``[n]`` of rows whose user and item are both in
        ``maps``; int64 indices ``[mask.sum()]`` of those rows in ``maps``' index space.
    """
    user_ids, item_ids = np.asarray(user_ids, np.int64), np.asarray(item_ids, np.int64)
    if user_ids.shape != item_ids.shape:
        raise ValueError(f"user_ids {user_ids.shape} and item_ids {item_ids.shape} differ")
    users = find_positions(maps.users.column(schema.USER_ID).to_numpy().astype(np.int64),
                           user_ids)
    items = find_positions(maps.items.column(schema.ITEM_ID).to_numpy().astype(np.int64),
                           item_ids)
    mask = (users >= 0) & (items >= 0)
    return mask, users[mask], items[mask]


def pair_metric(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray,
                metric: str) -> float:
    """``rmse`` or ``mae`` (``evaluation.rating``) of predictions against ratings."""
    if metric not in PAIR_METRICS:
        raise ValueError(f"cannot re-score by {metric!r}: only rmse and mae are pair metrics")
    p, t = (torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x.detach().cpu()
            for x in (pred, truth))
    return PAIR_METRICS[metric](p.reshape(-1), t.reshape(-1))
