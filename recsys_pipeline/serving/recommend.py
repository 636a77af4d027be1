"""Top-K recommendations in original ids: one user's list with titles, and every user's list.

Per batch of users, on the model's device: scores over the whole catalogue, the users'
already-rated items set to ``-inf`` (``evaluation.topk.ItemSets.entries``), ``torch.topk``.
Any model goes through ``score_all`` (as ``evaluation.topk.top_k_items`` does). MF and the
bias model take a fast path: a row's ranking does not change when a per-row constant is added
or a non-decreasing clamp applied, so they rank by

    MF:    b_i + p_u · q_i       (one ``addmm``; then r̂ = clamp(μ + b_u + value))
    bias:  b_i                   (then r̂ = clamp(μ + b_u + value))

and turn only the k winners into predicted ratings: one pass over the ``[B, n_items]`` block
instead of five. The scores returned equal ``score`` (up to float rounding); among items
tied at the clamp bound the unclamped value breaks the tie.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.evaluation.topk import ItemSets
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.bias import BiasModel
from recsys_pipeline.models.mf import MFModel
from recsys_pipeline.serving.tables import (
    RECOMMENDATIONS_SCHEMA,
    SCORE,
    USER_TOP_K_SCHEMA,
    check_model_maps,
    one_user_idx,
    ranked_table,
)
from recsys_pipeline.training.device import model_device

logger = logging.getLogger(__name__)

# auto batch size: score cells (users × items) per batch; 2^26 float32 scores = 256 MiB on a
# CPU, 2^28 = 1 GiB on a GPU (fewer, larger kernels; an H100 has 80 GB)
SCORE_CELLS_PER_BATCH = {"cpu": 1 << 26, "cuda": 1 << 28}


class TopK(NamedTuple):
    """Every user's top-K list (CPU tensors), best first.

    Attributes:
        user_idx: The users, ascending.  # [n] int64
        item_idx: Their items; a slot whose score is ``-inf`` is an already-rated filler
            (the user had fewer than k unrated items).  # [n, k] int64
        scores: The model's scores.  # [n, k] float32
    """

    user_idx: torch.Tensor
    item_idx: torch.Tensor
    scores: torch.Tensor


def seen_items(table: pa.Table, n_users: int) -> ItemSets:
    """Each user's rated items from an encoded table (``user_idx`` and ``item_idx`` columns).

    Args:
        table: E.g. the training split (``schema.ENCODED_RATINGS_SCHEMA``).
        n_users: Size of the user index space.

    Returns:
        The item sets, on the CPU.
    """
    missing = [c for c in (S.USER_IDX, S.ITEM_IDX) if c not in table.column_names]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; has {table.column_names}")
    users = torch.from_numpy(table.column(S.USER_IDX).to_numpy().astype(np.int64))
    items = torch.from_numpy(table.column(S.ITEM_IDX).to_numpy().astype(np.int64))
    return ItemSets.from_pairs(users, items, n_users)


def _check_seen(model: RatingModel, seen: ItemSets) -> None:
    if seen.n_users != model.n_users:
        raise ValueError(f"seen item sets cover {seen.n_users} users, the model "
                         f"{model.n_users}; build them from the model's training split")


Finish = Callable[[torch.Tensor], torch.Tensor]


def _clamped(model: MFModel | BiasModel, user_bias: torch.Tensor) -> Finish:
    cfg = model.config

    def finish(values: torch.Tensor) -> torch.Tensor:  # [B, k] -> [B, k]
        pred = model.global_mean + user_bias + values
        return pred.clamp(cfg.rating_min, cfg.rating_max) if cfg.clamp else pred

    return finish


def _ranking_scores(model: RatingModel, users: torch.Tensor) -> tuple[torch.Tensor, Finish]:
    """Scores that rank each row like ``score_all``, and the map from a row's top values to
    the model's scores (see the module doc).  # [B, n_items]"""
    if type(model) is MFModel:
        item_bias = model.item_bias.weight.T  # [1, n_items]
        part = torch.addmm(item_bias, model.user_factors(users), model.item_factors.weight.T)
        return part, _clamped(model, model.user_bias(users))
    if type(model) is BiasModel:
        part = model.item_bias.expand(users.shape[0], -1).clone()
        return part, _clamped(model, model.user_bias[users, None])
    return model.score_all(users).float(), lambda values: values


@torch.no_grad()
def _top_k_users(model: RatingModel, users: torch.Tensor, k: int, seen: ItemSets,
                 batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores, items)`` of each user's k best unseen items, on the model's device."""
    if not 1 <= k <= model.n_items:
        raise ValueError(f"k={k} must be in [1, n_items={model.n_items}]")
    model.eval()
    nan = torch.zeros((), dtype=torch.bool, device=users.device)
    parts = []
    for batch in users.split(batch_size):
        part, finish = _ranking_scores(model, batch)
        row, item = seen.entries(batch)
        part[row, item] = float("-inf")
        values, items = torch.topk(part, k, dim=1)
        final = torch.where(torch.isfinite(values), finish(values), values)  # fillers stay -inf
        nan |= torch.isnan(final).any()  # topk ranks NaN first: any NaN row shows here
        parts.append((final, items))
    if bool(nan):  # one device sync for all batches
        raise ValueError(f"{type(model).__name__} produced NaN scores")
    if not parts:
        empty = torch.empty(0, k, device=users.device)
        return empty, empty.long()
    return torch.cat([p[0] for p in parts]).float(), torch.cat([p[1] for p in parts])


def recommend(
    model: RatingModel, maps: IdMaps, movies: pa.Table, user_id: int, k: int, seen: ItemSets
) -> pa.Table:
    """The ``k`` best-scored movies for one user, never an item the user already rated.

    Args:
        model: A trained model (any family) in the maps' index space.
        maps: Id maps the model was trained with.
        movies: ``schema.MOVIES_SCHEMA`` table (titles, years, genres).
        user_id: Original MovieLens ``userId``.
        k: List length; fewer rows come back when the user has fewer than ``k`` unrated items.
        seen: Items each user rated (e.g. :func:`seen_items` of the training split).

    Returns:
        ``RECOMMENDATIONS_SCHEMA``: rank, item_id, title, year, genres, score (the predicted
        rating for rating models, a popularity count for the popularity model).

    Raises:
        ValueError: Unknown ``user_id``, ``k`` out of range, or model / maps / seen mismatch.
    """
    check_model_maps(model, maps)
    _check_seen(model, seen)
    device = model_device(model)
    user = torch.tensor([one_user_idx(maps, user_id)], device=device)
    scores, items = _top_k_users(model, user, k, seen.to(device), batch_size=1)
    keep = torch.isfinite(scores[0])
    item_idx = items[0][keep].cpu().numpy()
    item_ids = maps.to_item_ids(item_idx)
    return ranked_table(item_ids, movies, maps, {SCORE: scores[0][keep].cpu().numpy()},
                        RECOMMENDATIONS_SCHEMA)


def _on_device(model: RatingModel, device: torch.device | str | None) -> RatingModel:
    """The model on ``device``: itself when already there, else a copy (the caller's model
    is left where it is)."""
    if device is None or model_device(model) == torch.device(device):
        return model
    return copy.deepcopy(model).to(device)


@torch.no_grad()
def batch_top_k(
    model: RatingModel,
    seen: ItemSets,
    k: int,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> TopK:
    """Every user's top-``k`` unrated items over the full catalogue, in user batches.

    Per batch of users: scores (MF / bias: the fast path of the module doc; others:
    ``score_all``) → seen items set to ``-inf`` → ``torch.topk``, on ``device``; only the
    ``[n, k]`` results come back to the CPU.

    Args:
        model: A trained model (any family).
        seen: Items never to recommend per user (normally the training interactions).
        k: List length, ``1 <= k <= n_items``.
        batch_size: Users per batch; None picks ``2^26 // n_items`` on a CPU (256 MiB of
            scores) and ``2^28 // n_items`` on a GPU (1 GiB).
        device: Where to score (a copy of the model is moved there when needed); None uses
            the model's device.

    Returns:
        The :class:`TopK` lists of all ``n_users`` users.
    """
    _check_seen(model, seen)
    model = _on_device(model, device)
    dev = model_device(model)
    if batch_size is None:
        cells = SCORE_CELLS_PER_BATCH.get(dev.type, SCORE_CELLS_PER_BATCH["cpu"])
        batch_size = max(1, cells // model.n_items)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    users = torch.arange(model.n_users, device=dev)
    scores, items = _top_k_users(model, users, k, seen.to(dev), batch_size)
    return TopK(users.cpu(), items.cpu(), scores.cpu())


def top_k_table(top: TopK, maps: IdMaps) -> pa.Table:
    """Parquet-ready long table of :func:`batch_top_k` output, in original ids.

    Filler slots (score ``-inf``: the user had fewer than k unrated items) are dropped.

    Args:
        top: Lists from :func:`batch_top_k`.
        maps: The id maps of the model.

    Returns:
        ``USER_TOP_K_SCHEMA``: user_id, rank (1 = best), item_id, score; one row per
        (user, rank), sorted by user then rank.
    """
    n, k = top.item_idx.shape
    scores = top.scores.numpy().reshape(-1)
    keep = np.isfinite(scores)
    user_ids = np.repeat(maps.to_user_ids(top.user_idx.numpy()), k)[keep]
    rank = np.tile(np.arange(1, k + 1, dtype=np.int32), n)[keep]
    item_ids = maps.to_item_ids(top.item_idx.numpy().reshape(-1)[keep])
    columns = [pa.array(user_ids, S.ID_TYPE), pa.array(rank), pa.array(item_ids, S.ID_TYPE),
               pa.array(scores[keep].astype(np.float32))]
    return pa.Table.from_arrays(columns, schema=USER_TOP_K_SCHEMA)

