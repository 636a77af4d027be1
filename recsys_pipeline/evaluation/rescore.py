"""Scoring a model on another model's validation rows (the champion gate's re-scoring).

When the data moved on (new ratings, new users), the champion was validated on other rows
than the challenger. To compare them on the same data, the challenger's validation rows are
translated through original MovieLens ids into the champion's index space; the rows both
models know (users and items the champion was trained with) are scored by both.

Fold-in (strong-generalization) models are compared on the challenger's held-out validation
users that the champion never trained on, ranking only the items both models know
(:func:`rescore_fold_in`). Next-item models are compared on the challenger's validation
sequences, ranking the items both vocabularies hold (:func:`rescore_next_item`). Per-user
top-K models (two-tower) are compared on the validation ratings of the users both know, over
the items both know (:func:`rescore_topk`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recsys_pipeline import schema
from recsys_pipeline.data.encode import IdMaps, find_positions
from recsys_pipeline.evaluation.nextitem import evaluate_next_item
from recsys_pipeline.evaluation.rating import mae, rmse
from recsys_pipeline.evaluation.strong import evaluate_fold_in
from recsys_pipeline.evaluation.topk import ItemSets, evaluate_topk
from recsys_pipeline.training.data import RatingData
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


def _ranking_cutoff(metric: str, names: tuple[str, ...], kind: str) -> int:
    """K of a ``name@K`` metric whose name is one of ``names`` (ValueError otherwise)."""
    name, _, k = metric.partition("@")
    if name not in names or not k.isdigit():
        *head, last = (f"{n}@K" for n in names)
        allowed = f"{', '.join(head)} and {last}" if head else last
        raise ValueError(f"cannot re-score a {kind} model by {metric!r}: only {allowed}")
    return int(k)


class OnlyColumns(nn.Module):
    """A fold-in scorer that reads whole rows but ranks only ``columns`` (others ``-inf``)."""

    def __init__(self, model: nn.Module, columns: np.ndarray, n_items: int) -> None:
        super().__init__()
        self.model = model
        outside = torch.ones(n_items, dtype=torch.bool, device=model_device(model))
        outside[torch.as_tensor(columns, dtype=torch.long, device=outside.device)] = False
        self.register_buffer("outside", outside)

    def score_all_from(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores of every item, ``-inf`` outside the ranked columns.  # [B, n_items]"""
        scores = self.model.score_all_from(inputs).float().clone()
        scores[:, self.outside] = float("-inf")
        return scores


def rescore_fold_in(
    champion: nn.Module, champion_user_ids: np.ndarray, champion_item_ids: np.ndarray,
    challenger: nn.Module, user_ids: np.ndarray, item_ids: np.ndarray,
    fold_in: sp.spmatrix, heldout: sp.spmatrix, metric: str,
) -> tuple[float, float, int, int]:
    """Both fold-in models scored on the challenger's validation users, fairly.

    Only users the champion never trained on count (its training rows are its history's
    non-empty rows: a user it trained on would have his held-out items in its weights), and
    only items both models know are ranked and held out. Each model folds in the items of
    the user it knows (the champion the shared ones, the challenger all), as either would
    serve him; a user counts when he has a shared fold-in and a shared held-out item.

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
    k = _ranking_cutoff(metric, ("ndcg", "recall"), "fold-in")
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
    shared = sp.diags((theirs >= 0).astype(np.float32))
    fi_shared, ho = (fold_in @ shared).tocsr(), (heldout @ shared).tocsr()
    fresh &= (fi_shared.getnnz(1) > 0) & (ho.getnnz(1) > 0)
    if not fresh.any():
        raise ValueError("no validation user of the challenger is new to the champion and has "
                         "fold-in and held-out items they both know")
    keep = sp.diags(fresh.astype(np.float32))
    fi_shared, fi, ho = ((keep @ m).tocsr() for m in (fi_shared, fold_in, ho))
    champ = evaluate_fold_in(ItemSubset(champion, theirs[ours], len(champion_item_ids)),
                             fi_shared[:, ours], ho[:, ours], ks=(k,))
    chal = evaluate_fold_in(OnlyColumns(challenger, ours, len(item_ids)), fi, ho, ks=(k,))
    return champ[metric], chal[metric], int(chal["n_users"]), int(evaluated.sum())


class TokenSubset(nn.Module):
    """A next-item scorer whose scores are read over a shared token space ``1..S``.

    Shared token ``s`` is the model's token ``tokens[s - 1]``: the model scores its own
    inputs, and the shared tokens' columns are gathered (column 0: the model's padding score,
    ``-inf``), so two models with different vocabularies rank the same candidates.
    """

    def __init__(self, model: nn.Module, tokens: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.n_vocab = len(tokens)
        lookup = np.concatenate([[0], np.asarray(tokens, np.int64)])
        self.register_buffer("lookup", torch.as_tensor(lookup, device=model_device(model)))

    def score_next(self, tokens: torch.Tensor) -> torch.Tensor:
        """Scores of the shared tokens after rows of the model's own tokens.  # [B, S + 1]"""
        return self.model.score_next(tokens)[:, self.lookup]


def _left_aligned(tokens: np.ndarray) -> np.ndarray:
    """Rows with their padding moved to the front, real tokens kept in order."""
    order = np.argsort(tokens != 0, axis=1, kind="stable")
    return np.take_along_axis(tokens, order, axis=1)


def rescore_next_item(
    champion: nn.Module, champion_item_ids: np.ndarray, challenger: nn.Module,
    item_ids: np.ndarray, tokens: np.ndarray, targets: np.ndarray, metric: str,
) -> tuple[float, float, int, int]:
    """Both next-item models scored on the challenger's validation rows, fairly.

    The candidates are the items both vocabularies hold, minus those already in the row's
    input; each model reads the input items it knows (the champion's input drops the items
    it lacks and is re-padded on the left). A row counts when its target is a shared item and
    the champion knows some of its input.

    The champion must not have trained on these targets; a temporal split guarantees that
    (each user's validation target is newer than every training item, and new ratings only
    move it later) and the caller checks it.

    Args:
        champion: The champion (``score_next``, ``n_vocab``).
        champion_item_ids: Original item id of each champion token ``1..V'``.  # [V']
        challenger: The challenger (``score_next``).
        item_ids: Original item id of each challenger token ``1..V``.  # [V]
        tokens: The challenger's left-padded validation inputs (its tokens).  # [N, L]
        targets: Their target tokens.  # [N]
        metric: ``ndcg@K``, ``hr@K``, ``mrr@K``, ``map@K`` or ``precision@K``.

    Returns:
        ``(champion value, challenger value, rows compared, rows of the challenger)``.

    Raises:
        ValueError: An unsupported metric, or fewer shared items than K, or no row left.
    """
    k = _ranking_cutoff(metric, ("ndcg", "hr", "mrr", "map", "precision"), "next-item")
    tokens, targets = np.asarray(tokens, np.int64), np.asarray(targets, np.int64)
    if tokens.ndim != 2 or targets.shape != tokens.shape[:1]:
        raise ValueError(f"tokens {tokens.shape} must be [N, L] and targets {targets.shape} [N]")
    theirs = find_positions(np.asarray(champion_item_ids), np.asarray(item_ids))  # [V]
    ours = np.flatnonzero(theirs >= 0)  # challenger tokens - 1 of the shared items
    if ours.size <= k:
        raise ValueError(f"the models share {ours.size} items, too few to rank by {metric}")
    shared = np.zeros(len(item_ids) + 1, np.int64)  # challenger token -> shared token
    shared[ours + 1] = np.arange(1, ours.size + 1)
    to_champion = np.zeros(len(item_ids) + 1, np.int64)  # challenger -> champion token
    to_champion[ours + 1] = theirs[ours] + 1
    champion_inputs, wanted = _left_aligned(to_champion[tokens]), shared[targets]
    rows = (wanted > 0) & (champion_inputs[:, -1] > 0)
    if not rows.any():
        raise ValueError("no validation row of the challenger has a target and an input item "
                         "both models know")
    seen = shared[tokens[rows]]  # [n, L] shared tokens of the inputs, 0 elsewhere
    r, c = np.nonzero(seen)
    exclude = ItemSets.from_pairs(torch.from_numpy(r), torch.from_numpy(seen[r, c]),
                                  int(rows.sum()))
    scores = []
    for model, inputs, columns in ((champion, champion_inputs[rows], theirs[ours] + 1),
                                   (challenger, tokens[rows], ours + 1)):
        scores.append(evaluate_next_item(TokenSubset(model, columns), inputs, wanted[rows],
                                         (k,), exclude=exclude, exclude_inputs=False)[metric])
    return scores[0], scores[1], int(rows.sum()), len(targets)


class PairSubset(nn.Module):
    """A user-item scorer (``score_all``) seen through subsets of its users and items."""

    def __init__(self, model: nn.Module, users: np.ndarray, items: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.n_users, self.n_items = len(users), len(items)
        device = model_device(model)
        self.register_buffer("users", torch.as_tensor(users, dtype=torch.long, device=device))
        self.register_buffer("items", torch.as_tensor(items, dtype=torch.long, device=device))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of the subset's items for subset users.  # [B, n_subset_items]"""
        return self.model.score_all(self.users[users.to(self.users.device)])[:, self.items]


def rescore_topk(
    champion: nn.Module, champion_user_ids: np.ndarray, champion_item_ids: np.ndarray,
    challenger: nn.Module, user_ids: np.ndarray, item_ids: np.ndarray,
    train: sp.spmatrix, valid: sp.spmatrix, metric: str, threshold: float = 4.0,
) -> tuple[float, float, int, int]:
    """Both per-user top-K models scored on the challenger's validation ratings, fairly.

    Users both models know are ranked over the items both know, each user's training items
    masked, relevant = validation ratings ``>= threshold`` (the per-user top-K protocol of
    ``training.ranking_experiment.run_topk``). The champion must not have trained on these
    validation ratings; a temporal split guarantees that, and the caller checks it.

    Args:
        champion: The champion (``score_all(users)``).
        champion_user_ids: Original user id of each champion user index.  # [n_users']
        champion_item_ids: Original item id of each champion item index.  # [n_items']
        challenger: The challenger (``score_all(users)``).
        user_ids: Original user id of each row of ``train`` / ``valid``.  # [n_users]
        item_ids: Original item id of each of their columns.  # [n_items]
        train: The challenger's training ratings (masked from the ranking).  # CSR
        valid: Its validation ratings.  # [n_users, n_items] CSR
        metric: A key of ``evaluate_topk``'s result with a cut-off, e.g. ``ndcg@10``.
        threshold: Lowest relevant rating.

    Returns:
        ``(champion value, challenger value, users compared, users with a relevant
        validation item)``.

    Raises:
        ValueError: A metric without a cut-off, too few shared items, or no shared user with a
            relevant validation item among the shared items.
    """
    k = _ranking_cutoff(metric, ("precision", "recall", "ndcg", "map", "hit_rate", "mrr"),
                        "top-K")
    train, valid = sp.csr_matrix(train), sp.csr_matrix(valid)
    if train.shape != valid.shape or valid.shape != (len(user_ids), len(item_ids)):
        raise ValueError(f"train {train.shape}, valid {valid.shape}, {len(user_ids)} user ids "
                         f"and {len(item_ids)} item ids do not match")
    cu = find_positions(np.asarray(champion_user_ids), np.asarray(user_ids))
    ci = find_positions(np.asarray(champion_item_ids), np.asarray(item_ids))
    users, items = np.flatnonzero(cu >= 0), np.flatnonzero(ci >= 0)
    if items.size < k:
        raise ValueError(f"the models share {items.size} items, fewer than {metric}'s K")
    relevant = (valid >= threshold).getnnz(1) > 0
    rows = valid[users][:, items]
    if users.size == 0 or not ((rows >= threshold).getnnz(1) > 0).any():
        raise ValueError("no validation user of the challenger is known to the champion and "
                         f"has a rating >= {threshold} of an item both models know")
    test, exclude = RatingData.from_csr(rows), RatingData.from_csr(train[users][:, items])
    scores = [evaluate_topk(PairSubset(model, u, i), test, exclude, (k,), threshold)
              for model, u, i in ((champion, cu[users], ci[items]),
                                  (challenger, users, items))]
    return scores[0][metric], scores[1][metric], int(scores[1]["n_users"]), int(relevant.sum())
