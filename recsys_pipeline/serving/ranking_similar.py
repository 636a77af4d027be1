"""Similar movies from a two-tower model: cosine of item-tower vectors (the ``similar``
answer of ``serving.similar`` for the ranking family that has item embeddings).

``cos(i, j) = g(i) · g(j) / (‖g(i)‖ ‖g(j)‖)`` with ``g`` the item tower (id + genres + year).
Fold-in and sequence models keep no item vectors that serve this purpose (EASE has an
item-item weight matrix, but it is not a similarity), so ``serving.similar`` refuses them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.models.two_tower import TwoTowerModel
from recsys_pipeline.serving.tables import (
    SIMILAR_ITEMS_SCHEMA,
    SIMILARITY,
    check_model_maps,
    ranked_table,
)

NEG_INF = float("-inf")


@torch.no_grad()
def two_tower_similar_items(model: TwoTowerModel, maps: IdMaps, movies: pa.Table,
                            item_id: int, k: int) -> pa.Table:
    """The ``k`` movies whose item-tower vectors have the largest cosine with ``item_id``'s.

    Args:
        model: A trained two-tower model.
        maps: Its id maps (the lake's).
        movies: ``schema.MOVIES_SCHEMA`` table.
        item_id: Original MovieLens ``movieId`` (never in its own list).
        k: List length, ``1 <= k < n_items``.

    Returns:
        ``SIMILAR_ITEMS_SCHEMA`` (as ``serving.similar.similar_items``).
    """
    check_model_maps(model, maps)
    if not 1 <= k < model.n_items:
        raise ValueError(f"k={k} must be in [1, n_items - 1 = {model.n_items - 1}]")
    i = int(maps.to_item_idx(np.asarray([item_id]))[0])
    model.eval()
    unit = torch.nn.functional.normalize(model.item_embeddings().float(), dim=1)
    cos = unit @ unit[i]  # [n_items]
    cos[i] = NEG_INF
    top_cos, top = torch.topk(cos, k)
    return ranked_table(maps.to_item_ids(top.cpu().numpy()), movies, maps,
                        {SIMILARITY: top_cos.cpu().numpy()}, SIMILAR_ITEMS_SCHEMA)
