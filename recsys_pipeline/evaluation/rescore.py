"""Scoring a model on another model's validation rows (the champion gate's re-scoring).

When the data moved on (new ratings, new users), the champion was validated on other rows
than the challenger. To compare them on the same data, the challenger's validation rows are
translated through original MovieLens ids into the champion's index space; the rows both
models know (users and items the champion was trained with) are scored by both.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recsys_pipeline import schema
from recsys_pipeline.data.encode import IdMaps


def _positions(known_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(found mask, index into known_ids)`` of each id (index 0 where not found)."""
    order = np.argsort(known_ids, kind="stable")
    sorted_ids = known_ids[order]
    at = np.searchsorted(sorted_ids, ids)
    at_clipped = np.minimum(at, max(len(sorted_ids) - 1, 0))
    found = (at < len(sorted_ids)) & (sorted_ids[at_clipped] == ids) if len(sorted_ids) else \
        np.zeros(len(ids), dtype=bool)
    return found, np.where(found, order[at_clipped], 0)


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
    u_found, u_idx = _positions(maps.users.column(schema.USER_ID).to_numpy().astype(np.int64),
                                user_ids)
    i_found, i_idx = _positions(maps.items.column(schema.ITEM_ID).to_numpy().astype(np.int64),
                                item_ids)
    mask = u_found & i_found
    return mask, u_idx[mask].astype(np.int64), i_idx[mask].astype(np.int64)


def _float64(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy().reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def pair_metric(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray,
                metric: str) -> float:
    """``rmse`` or ``mae`` of predictions against ratings (float64 accumulation)."""
    p, t = _float64(pred), _float64(truth)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"{metric}: need equally long non-empty arrays, got {tuple(p.shape)} "
                         f"and {tuple(t.shape)}")
    if metric == "rmse":
        return math.sqrt(float(np.mean((p - t) ** 2)))
    if metric == "mae":
        return float(np.mean(np.abs(p - t)))
    raise ValueError(f"cannot re-score by {metric!r}: only rmse and mae are pair metrics")
