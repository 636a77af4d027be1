"""Scoring a model on another model's validation rows (the champion gate's re-scoring).

When the data moved on (new ratings, new users), the champion was validated on other rows
than the challenger. To compare them on the same data, the challenger's validation rows are
translated through original MovieLens ids into the champion's index space; the rows both
models know (users and items the champion was trained with) are scored by both.

Fold-in (strong-generalization) models are compared on the challenger's held-out validation
users that the champion never trained on, ranking only the items both models know
(:func:`rescore_fold_in`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recsys_pipeline import schema
from recsys_pipeline.data.encode import IdMaps, find_positions
from recsys_pipeline.evaluation.rating import mae, rmse
from recsys_pipeline.evaluation.strong import evaluate_fold_in
from recsys_pipeline.training.device import model_device

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


class ItemSubset(nn.Module):
    """A fold-in scorer seen through a subset of its items (columns in a shared order).

    Rows over the subset are scattered into the model's own item space, scored, and the
    subset's columns gathered back, so two models with different catalogues rank the same
    candidates.
    """

    def __init__(self, model: nn.Module, columns: np.ndarray, n_items: int) -> None:
        super().__init__()
        self.model = model
        self.n_items = n_items
        self.register_buffer("columns", torch.as_tensor(columns, dtype=torch.long,
                                                        device=model_device(model)))

    def score_all_from(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores of the subset's items.  # [B, n_subset]"""
        full = inputs.new_zeros(inputs.shape[0], self.n_items)
        full[:, self.columns] = inputs
        return self.model.score_all_from(full)[:, self.columns]


def _ranking_cutoff(metric: str) -> int:
    name, _, k = metric.partition("@")
    if name not in ("ndcg", "recall") or not k.isdigit():
        raise ValueError(f"cannot re-score a fold-in model by {metric!r}: only ndcg@K and "
                         "recall@K")
    return int(k)


def rescore_fold_in(
    champion: nn.Module, champion_user_ids: np.ndarray, champion_item_ids: np.ndarray,
    challenger: nn.Module, user_ids: np.ndarray, item_ids: np.ndarray,
    fold_in: sp.spmatrix, heldout: sp.spmatrix, metric: str,
) -> tuple[float, float, int, int]:
    """Both fold-in models scored on the challenger's validation users, fairly.

    Only users the champion never trained on count (its training rows are its history's
    non-empty rows: a user it trained on would have his held-out items in its weights), and
    only items both models know are ranked.

    Args:
        champion: The champion (``score_all_from`` and a ``history()`` of training rows).
        champion_user_ids: Original user id of each champion row.  # [n_users']
        champion_item_ids: Original item id of each champion column.  # [n_items']
        challenger: The challenger (``score_all_from``).
        user_ids: Original user id of each row of ``fold_in`` / ``heldout``.  # [n_users]
        item_ids: Original item id of each of their columns (the challenger's).  # [n_items]
        fold_in: The challenger's validation fold-in rows.  # [n_users, n_items] CSR
        heldout: The matching held-out rows.  # [n_users, n_items] CSR
        metric: ``ndcg@K`` or ``recall@K``.

    Returns:
        ``(champion value, challenger value, users compared, users the challenger was
        validated on)``.

    Raises:
        ValueError: An unsupported metric, or no user / item left to compare on.
    """
    k = _ranking_cutoff(metric)
    fold_in, heldout = sp.csr_matrix(fold_in), sp.csr_matrix(heldout)
    if fold_in.shape != heldout.shape or fold_in.shape != (len(user_ids), len(item_ids)):
        raise ValueError(f"fold_in {fold_in.shape}, heldout {heldout.shape}, {len(user_ids)} "
                         f"user ids and {len(item_ids)} item ids do not match")
    evaluated = (fold_in.getnnz(1) > 0) & (heldout.getnnz(1) > 0)
    trained = np.asarray(champion_user_ids)[(champion.history().row_nnz() > 0).cpu().numpy()]
    fresh = evaluated & (find_positions(trained, np.asarray(user_ids)) < 0)
    theirs = find_positions(np.asarray(champion_item_ids), np.asarray(item_ids))
    ours = np.flatnonzero(theirs >= 0)
    if ours.size < k:
        raise ValueError(f"the models share {ours.size} items, fewer than {metric}'s K")
    keep = sp.diags(fresh.astype(np.float32))
    fi, ho = ((keep @ m)[:, ours].tocsr() for m in (fold_in, heldout))
    if not ((fi.getnnz(1) > 0) & (ho.getnnz(1) > 0)).any():
        raise ValueError("no validation user of the challenger is new to the champion and has "
                         "fold-in and held-out items they both know")
    champ = evaluate_fold_in(ItemSubset(champion, theirs[ours], len(champion_item_ids)),
                             fi, ho, ks=(k,))
    chal = evaluate_fold_in(ItemSubset(challenger, ours, len(item_ids)), fi, ho, ks=(k,))
    return champ[metric], chal[metric], int(chal["n_users"]), int(evaluated.sum())
