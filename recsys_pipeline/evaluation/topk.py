"""Full-catalogue top-K recommendation and ranking evaluation, in user batches on the device.

For each batch of users: ``model.score_all`` → training items set to ``-inf`` → ``torch.topk``
→ hits against the user's relevant test items → metric sums. Relevant items are the user's
test items with ``rating >= relevance_threshold`` (``None``: every test item); users with no
relevant item are not evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recsys_pipeline.evaluation.ranking import (
    average_precision_at_k,
    hit_rate_at_k,
    item_seen_mask,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
)
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import model_device
from recsys_pipeline.training.seed import torch_generator

SAMPLE_SEED = 0  # evaluate_topk's user sample: fixed, so models on the same data share it


@dataclass(frozen=True)
class ItemSets:
    """Each user's item set in CSR form: user ``u``'s items are ``indices[indptr[u]:indptr[u+1]]``.

    Attributes:
        indptr: Row offsets, int64.  # [n_users + 1]
        indices: Item indices, int64, sorted by user.  # [nnz]
    """

    indptr: torch.Tensor
    indices: torch.Tensor

    @classmethod
    def from_pairs(cls, users: torch.Tensor, items: torch.Tensor, n_users: int) -> ItemSets:
        """CSR from aligned ``users`` / ``items`` (one sort, no Python loop)."""
        order = torch.argsort(users, stable=True)
        counts = torch.bincount(users, minlength=n_users)
        if counts.numel() > n_users:
            raise ValueError(f"user_idx {int(users.max())} >= n_users={n_users}")
        indptr = torch.zeros(n_users + 1, dtype=torch.long, device=users.device)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr, items[order].long())

    @classmethod
    def from_data(
        cls, data: RatingData, n_users: int, min_rating: float | None = None
    ) -> ItemSets:
        """The items each user rated in ``data`` (only ratings ``>= min_rating`` when given)."""
        if min_rating is None:
            return cls.from_pairs(data.users, data.items, n_users)
        keep = data.ratings >= min_rating
        return cls.from_pairs(data.users[keep], data.items[keep], n_users)

    @classmethod
    def from_sparse(cls, matrix: torch.Tensor) -> ItemSets:
        """From a torch sparse (COO or CSR) ``[n_users, n_items]`` matrix's non-zero pattern."""
        if matrix.layout == torch.sparse_csr:
            return cls(matrix.crow_indices().long(), matrix.col_indices().long())
        coo = matrix.coalesce()  # row-major order, duplicates summed
        rows, cols = coo.indices()
        return cls.from_pairs(rows, cols, matrix.shape[0])

    @property
    def n_users(self) -> int:
        """Number of rows."""
        return self.indptr.numel() - 1

    def to(self, device: torch.device | str) -> ItemSets:
        """The same sets on ``device``."""
        return ItemSets(self.indptr.to(device), self.indices.to(device))

    def counts(self, users: torch.Tensor | None = None) -> torch.Tensor:
        """Set sizes of ``users`` (all users when None).  # [B]"""
        sizes = self.indptr[1:] - self.indptr[:-1]
        return sizes if users is None else sizes[users]

    def entries(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row, item)`` pairs of the users' sets; ``row`` indexes ``users``.  # [m], [m]"""
        sizes = self.counts(users)
        row = torch.repeat_interleave(torch.arange(users.numel(), device=users.device), sizes)
        first = torch.cumsum(sizes, 0) - sizes  # offset of each row's first entry in the batch
        pos = torch.arange(row.numel(), device=users.device) - first[row]
        return row, self.indices[self.indptr[users][row] + pos]

    def mask(self, users: torch.Tensor, n_items: int) -> torch.Tensor:
        """Dense membership mask of the users' sets.  # [B, n_items] bool"""
        out = torch.zeros(users.numel(), n_items, dtype=torch.bool, device=users.device)
        row, item = self.entries(users)
        out[row, item] = True
        return out


@torch.no_grad()
def _top_k_batch(
    model: nn.Module, users: torch.Tensor, k: int, exclude: ItemSets | None
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = model.score_all(users).float()  # [B, n_items], a fresh tensor
    if bool(torch.isnan(scores).any()):
        raise ValueError(f"{type(model).__name__}.score_all returned NaN scores")
    if exclude is not None:
        row, item = exclude.entries(users)
        scores[row, item] = float("-inf")
    return torch.topk(scores, k, dim=1)


def top_k_items(
    model: nn.Module,
    users: torch.Tensor,
    k: int,
    exclude: ItemSets | None = None,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's K best-scored items, skipping excluded (e.g. already rated) items.

    Args:
        model: A model with ``score_all`` (put in eval mode here).
        users: Users to recommend for.  # [U]
        k: List length (<= n_items).
        exclude: Items never to recommend per user (scored ``-inf``; if a user has fewer than
            k other items, the tail of the list holds excluded items with score ``-inf``).
        batch_size: Users per ``score_all`` call.

    Returns:
        ``(scores, items)``, best first.  # [U, k], [U, k]
    """
    n_items = model.n_items
    if not 1 <= k <= n_items:
        raise ValueError(f"k={k} must be in [1, n_items={n_items}]")
    device = model_device(model)
    model.eval()
    users = users.to(device)
    exclude = exclude.to(device) if exclude is not None else None
    parts = [_top_k_batch(model, b, k, exclude) for b in users.split(batch_size)]
    if not parts:
        return torch.empty(0, k, device=device), torch.empty(0, k, dtype=torch.long, device=device)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def evaluate_topk(
    model: nn.Module,
    test: RatingData,
    exclude: ItemSets | RatingData | None = None,
    ks: Sequence[int] = (10,),
    relevance_threshold: float | None = 4.0,
    batch_size: int = 1024,
    max_users: int | None = None,
) -> dict[str, float]:
    """Full-catalogue ranking metrics (see ``evaluation.ranking``), averaged over users.

    Args:
        model: A model with ``score_all`` and ``n_items`` / ``n_users``.
        test: Held-out interactions; relevant = ``rating >= relevance_threshold``.
        exclude: Items to mask per user, normally the training interactions.
        ks: Cut-offs; one top-max(ks) list per user serves them all.
        relevance_threshold: Minimum relevant rating; None makes every test item relevant.
        batch_size: Users per ``score_all`` call.
        max_users: Rank only this many users with a relevant item, a sample drawn with a
            fixed seed from the test data alone (so every model evaluated on the same data
            ranks the same users); None ranks them all. For models that score every pair
            through their network (MLP, NeuMF, DeepFM), which would take hours on a CPU at
            ml-10m's 70k users x 10k items.

    Returns:
        ``precision@k``, ``recall@k``, ``ndcg@k``, ``map@k``, ``hit_rate@k``, ``mrr@k`` (means
        over evaluated users), ``coverage@k`` (catalogue share of their lists) for each k, and
        ``n_users`` (the users ranked).

    Raises:
        ValueError: No user has a relevant test item, or a k is out of range.
    """
    n_users, n_items = model.n_users, model.n_items
    if not ks or any(not 1 <= k <= n_items for k in ks):
        raise ValueError(f"ks={tuple(ks)} must be non-empty with each k in [1, {n_items}]")
    device = model_device(model)
    model.eval()
    test = test.to(device)
    test.validate(n_users=n_users, n_items=n_items)
    if isinstance(exclude, RatingData):
        exclude = ItemSets.from_data(exclude.to(device), n_users)
    exclude = exclude.to(device) if exclude is not None else None
    relevant = ItemSets.from_data(test, n_users, relevance_threshold)
    n_relevant = relevant.counts()  # [n_users]
    users = torch.nonzero(n_relevant > 0).flatten()
    if users.numel() == 0:
        raise ValueError(f"no test user has an item with rating >= {relevance_threshold}")
    if max_users is not None:
        if max_users < 1:
            raise ValueError(f"max_users={max_users} must be >= 1 or None")
        if users.numel() > max_users:
            pick = torch.randperm(users.numel(), generator=torch_generator(SAMPLE_SEED))
            users = users[pick[:max_users].to(users.device)].sort().values
    names = ("precision", "recall", "ndcg", "map", "hit_rate", "mrr")
    sums = {f"{m}@{k}": torch.zeros((), dtype=torch.float64, device=device)
            for k in ks for m in names}
    seen = {k: torch.zeros(n_items, dtype=torch.bool, device=device) for k in ks}
    for batch in users.split(batch_size):
        scores, top = _top_k_batch(model, batch, max(ks), exclude)
        valid = torch.isfinite(scores)  # masked (excluded) slots never count
        hits = relevant.mask(batch, n_items).gather(1, top) & valid  # [B, K]
        n_rel = n_relevant[batch]
        for k in ks:
            h = hits[:, :k]
            sums[f"precision@{k}"] += precision_at_k(h).sum()
            sums[f"recall@{k}"] += recall_at_k(h, n_rel).sum()
            sums[f"ndcg@{k}"] += ndcg_at_k(h, n_rel).sum()
            sums[f"map@{k}"] += average_precision_at_k(h, n_rel).sum()
            sums[f"hit_rate@{k}"] += hit_rate_at_k(h).sum()
            sums[f"mrr@{k}"] += reciprocal_rank_at_k(h).sum()
            seen[k] |= item_seen_mask(top[:, :k][valid[:, :k]], n_items)
    n = users.numel()
    result = {name: float(total) / n for name, total in sums.items()}
    result.update({f"coverage@{k}": float(seen[k].sum()) / n_items for k in ks})
    result["n_users"] = float(n)
    return result
