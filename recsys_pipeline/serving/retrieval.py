"""User and item vectors for a nearest-neighbour index that ranks like the model.

A retrieval system (FAISS, ScaNN, a vector database) finds a user's top-K items as the items
with the largest inner product ``u · v``. :func:`retrieval_vectors` gives vectors whose inner
products order every user's items exactly as the model's ``score_all`` does, for the
families where such vectors exist:

* **two-tower**: its tower outputs, ``f(u)`` and ``g(i)`` (id embedding plus the genre and
  year features, after the top layers); the model's score is ``f(u) · g(i) / τ`` with a
  positive temperature ``τ``, the same order. With ``normalize`` the vectors are unit length,
  so inner product and cosine agree.
* **MF**: ``[p_u, 1]`` and ``[q_i, b_i]``. The score ``μ + b_u + b_i + p_u · q_i`` adds
  ``μ + b_u``, the same for every item of one user, so only ``b_i + p_u · q_i`` orders them
  (the model's clamp to the rating scale can only turn order into ties).

MLP, NeuMF and DeepFM score through non-linear layers (no inner product ranks like them),
bias and popularity models rank every user alike, and the fold-in and sequence models have
no stored vector per user: :func:`retrieval_vectors` says so instead of returning vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.data.lake import write_parquet
from recsys_pipeline.models.base import RatingModel

VECTOR = "vector"
USER_VECTORS_FILE = "user_vectors.parquet"
ITEM_VECTORS_FILE = "item_vectors.parquet"
# why a family has no retrieval vectors (fold-in and sequence models: NO_USER_VECTOR)
NONLINEAR, ALIKE = "scores through non-linear layers", "ranks every user's items alike"
NO_VECTORS = {"mlp": NONLINEAR, "neumf": NONLINEAR, "deepfm": f"{NONLINEAR} and feature crosses",
              "bias": ALIKE, "popularity": ALIKE}
NO_USER_VECTOR = "keeps no vector per user (its input is the user's items or sequence)"


@dataclass(frozen=True)
class RetrievalVectors:
    """Vectors whose inner products rank items like the model.

    Attributes:
        users: One row per ``user_idx``.  # [n_users, d]
        items: One row per ``item_idx``.  # [n_items, d]
        score: How the model's score relates to ``users @ items.T`` (one line).
    """

    users: np.ndarray
    items: np.ndarray
    score: str


@torch.no_grad()
def retrieval_vectors(model: RatingModel) -> RetrievalVectors:
    """User and item vectors whose inner products order each user's items like the model.

    Args:
        model: A trained two-tower or MF model (a served ranking model is unwrapped).

    Returns:
        float32 :class:`RetrievalVectors`.

    Raises:
        ValueError: A family without such vectors, with the reason.
    """
    model = getattr(model, "model", model)  # serving.ranking_serving wraps ranking models
    model.eval()
    family = getattr(model, "family", type(model).__name__)
    if family == "two_tower":
        users, items = model.user_embeddings(), model.item_embeddings()
        score = f"model score = user · item / temperature ({model.config.temperature:g})"
    elif family == "mf":
        ones = torch.ones(model.n_users, 1, device=model.user_factors.weight.device)
        users = torch.cat([model.user_factors.weight, ones], dim=1)
        items = torch.cat([model.item_factors.weight, model.item_bias.weight], dim=1)
        score = ("model score = global mean + user bias + user · item (the last item "
                 "component is the item bias), clamped to the rating scale")
    else:
        why = NO_VECTORS.get(family, NO_USER_VECTOR)
        raise ValueError(f"the {family} model has no vectors whose inner product ranks like "
                         f"it: it {why}; two_tower and mf have")
    return RetrievalVectors(users.float().cpu().numpy(), items.float().cpu().numpy(), score)


def vectors_table(ids: np.ndarray, vectors: np.ndarray, id_column: str) -> pa.Table:
    """``id_column`` (original ids) and ``vector`` (fixed-size list of float32) per row."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = pa.array(vectors.reshape(-1))
    return pa.table({id_column: pa.array(ids, S.ID_TYPE),
                     VECTOR: pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})


def read_vectors(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors [n, d])`` of a file written by :func:`write_retrieval_vectors`."""
    table = pq.read_table(path)
    column = table.column(VECTOR).combine_chunks()
    dim = column.type.list_size
    return (table.column(0).to_numpy(),
            column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))


def write_retrieval_vectors(found: RetrievalVectors, maps: IdMaps, folder: str | Path
                            ) -> tuple[Path, Path]:
    """Write ``user_vectors.parquet`` (user_id, vector) and ``item_vectors.parquet``
    (item_id, vector) into ``folder``, each file atomically.

    Raises:
        ValueError: The vectors do not fit the maps (one row per user and per item).
    """
    if (len(found.users), len(found.items)) != (maps.n_users, maps.n_items):
        raise ValueError(f"{len(found.users)} user and {len(found.items)} item vectors but "
                         f"the id maps have {maps.n_users} users and {maps.n_items} items")
    folder = Path(folder)
    users = write_parquet(vectors_table(maps.users.column(S.USER_ID).to_numpy(), found.users,
                                        S.USER_ID), folder / USER_VECTORS_FILE)
    items = write_parquet(vectors_table(maps.items.column(S.ITEM_ID).to_numpy(), found.items,
                                        S.ITEM_ID), folder / ITEM_VECTORS_FILE)
    return users, items
