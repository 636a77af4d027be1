"""Recommend from embeddings (verified by the full model's prediction) and find similar movies.

Embedding models keep one vector per user and per item (MF: the factors ``p_u`` / ``q_i``;
MLP, DeepFM: their id embeddings; NeuMF: its GMF embeddings, whose element-wise product the
output layer weighs; two-tower: its tower outputs, id plus side features, from
``user_embeddings()`` / ``item_embeddings()``). :func:`embeddings` hands them out for every
family that has them; fold-in and sequence models have none that serve this purpose.

* :func:`recommend_by_embedding` ranks a user's unrated items by ``e_u · e_i`` (cheap candidate
  retrieval, as a two-tower index would), then shows the full model's predicted rating of each
  and the rank the full model gives it, so a reader sees how far the two orders agree.
* :func:`similar_items` ranks movies by cosine similarity of item embeddings,
  ``cos(i, j) = e_i · e_j / (‖e_i‖ ‖e_j‖)``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.evaluation.topk import ItemSets
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.serving.tables import (
    EMBEDDING_RECOMMENDATIONS_SCHEMA,
    MODEL_RANK,
    PREDICTED,
    SIMILAR_ITEMS_SCHEMA,
    SIMILARITY,
    check_model_maps,
    one_item_idx,
    one_user_idx,
    ranked_table,
)

# family -> (user embedding, item embedding) module names
EMBEDDING_MODULES: dict[str, tuple[str, str]] = {
    "mf": ("user_factors", "item_factors"),
    "mlp": ("user_embedding", "item_embedding"),
    "neumf": ("gmf_user", "gmf_item"),
    "deepfm": ("user_embedding", "item_embedding"),
}


# every family with user/item embeddings (two-tower's are its tower outputs)
EMBEDDING_FAMILIES = tuple(sorted([*EMBEDDING_MODULES, "two_tower"]))


def embeddings(model: RatingModel) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The model's user and item embedding tables (detached), or None when it has none.

    Args:
        model: Any rating model.

    Returns:
        ``(user_emb [n_users, d_u], item_emb [n_items, d_i])``; None for the bias,
        popularity, fold-in and sequence models. ``d_u != d_i`` is possible for an MLP
        (then only item–item similarity is defined).
    """
    towers = (getattr(model, "user_embeddings", None), getattr(model, "item_embeddings", None))
    if all(callable(t) for t in towers):
        model.eval()
        return towers[0]().detach(), towers[1]().detach()  # type: ignore[misc]
    names = EMBEDDING_MODULES.get(model.family)
    if names is None:
        return None
    user, item = (getattr(model, n).weight.detach() for n in names)
    return user, item


def _require(model: RatingModel) -> tuple[torch.Tensor, torch.Tensor]:
    emb = embeddings(model)
    if emb is None:
        raise ValueError(f"the {model.family} model has no user/item embeddings; models with "
                         f"them: {', '.join(EMBEDDING_FAMILIES)}")
    return emb


@torch.no_grad()
def recommend_by_embedding(
    model: RatingModel, maps: IdMaps, movies: pa.Table, user_id: int, k: int, seen: ItemSets
) -> pa.Table:
    """A user's ``k`` unrated movies with the largest ``e_u · e_i``, checked by the full model.

    Args:
        model: A trained model with embeddings (see :func:`embeddings`).
        maps: Its id maps.
        movies: ``schema.MOVIES_SCHEMA`` table.
        user_id: Original MovieLens ``userId``.
        k: List length (fewer rows when the user has fewer unrated items).
        seen: Items each user already rated (never recommended).

    Returns:
        ``EMBEDDING_RECOMMENDATIONS_SCHEMA``: rank, item_id, title, year, genres, similarity
        (``e_u · e_i``), predicted (the full model's ``r̂(u, i)``) and model_rank (the item's
        rank among the user's unrated items under the full model's scores, 1 = best).

    Raises:
        ValueError: No embeddings, user and item widths differ, unknown user, bad ``k``.
    """
    check_model_maps(model, maps)
    user_emb, item_emb = _require(model)
    if user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"{type(model).__name__} has user embeddings of width "
                         f"{user_emb.shape[1]} and item embeddings of width {item_emb.shape[1]};"
                         " a dot product needs equal widths")
    if not 1 <= k <= model.n_items:
        raise ValueError(f"k={k} must be in [1, n_items={model.n_items}]")
    u = torch.tensor([one_user_idx(maps, user_id)], device=user_emb.device)
    model.eval()
    rated = seen.to(u.device).mask(u, model.n_items)[0]  # [n_items] bool
    sim = (item_emb @ user_emb[u[0]]).float().masked_fill(rated, float("-inf"))  # [n_items]
    top_sim, top = torch.topk(sim, min(k, int((~rated).sum())))
    full = model.score_all(u)[0].float().masked_fill(rated, float("-inf"))  # [n_items]
    predicted = full[top]
    # rank under the full model: 1 + number of unrated items scored strictly higher
    model_rank = 1 + (full[None, :] > predicted[:, None]).sum(1)
    item_ids = maps.to_item_ids(top.cpu().numpy())
    extra = {SIMILARITY: top_sim.cpu().numpy(), PREDICTED: predicted.cpu().numpy(),
             MODEL_RANK: model_rank.int().cpu().numpy()}
    return ranked_table(item_ids, movies, maps, extra, EMBEDDING_RECOMMENDATIONS_SCHEMA)


@torch.no_grad()
def similar_items(
    model: RatingModel, maps: IdMaps, movies: pa.Table, item_id: int, k: int,
    support: np.ndarray | None = None, min_support: int = 0,
) -> pa.Table:
    """The ``k`` movies whose item embeddings have the largest cosine with ``item_id``'s.

    An item seen in one or two training ratings keeps an embedding close to its random
    initialisation, and the cosine with it is noise; ``min_support`` leaves such items out
    of the list (not the query item itself).

    Args:
        model: A trained model with embeddings.
        maps: Its id maps.
        movies: ``schema.MOVIES_SCHEMA`` table.
        item_id: Original MovieLens ``movieId`` (never in its own list).
        k: List length, ``1 <= k < n_items`` (fewer rows when fewer items qualify).
        support: Training ratings per item index.  # [n_items]
        min_support: Fewest training ratings a listed movie needs (needs ``support``).

    Returns:
        ``SIMILAR_ITEMS_SCHEMA``: rank, item_id, title, year, genres, similarity (cosine).

    Raises:
        ValueError: No embeddings, unknown item, bad ``k``, ``min_support`` without support.
    """
    check_model_maps(model, maps)
    _, item_emb = _require(model)
    if not 1 <= k < model.n_items:
        raise ValueError(f"k={k} must be in [1, n_items - 1 = {model.n_items - 1}]")
    if min_support and (support is None or len(support) != model.n_items):
        raise ValueError(f"min_support={min_support} needs the training ratings of each of "
                         f"the {model.n_items} items")
    i = one_item_idx(maps, item_id, movies)
    unit = torch.nn.functional.normalize(item_emb.float(), dim=1)  # zero rows stay zero
    cos = unit @ unit[i]  # [n_items]
    if min_support:
        cos[torch.from_numpy(np.asarray(support) < min_support).to(cos.device)] = float("-inf")
    cos[i] = float("-inf")
    top_cos, top = torch.topk(cos, k)
    listed = torch.isfinite(top_cos)
    top_cos, top = top_cos[listed], top[listed]
    item_ids = maps.to_item_ids(top.cpu().numpy())
    return ranked_table(item_ids, movies, maps, {SIMILARITY: top_cos.cpu().numpy()},
                        SIMILAR_ITEMS_SCHEMA)
