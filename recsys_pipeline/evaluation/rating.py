"""Rating-prediction metrics: RMSE, MAE and FCP, plus batched prediction over ``RatingData``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from recsys_pipeline.training.data import RatingData

# FCP compares all pairs of one user's items; cap the pair cells materialised per chunk
FCP_PAIR_BUDGET = 1 << 24


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 1:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be "
                         "1-D and the same shape")
    if pred.numel() == 0:
        raise ValueError("no predictions to score (empty input)")


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Root mean squared error: ``√( (1/n) Σ (r̂ − r)² )``.

    Args:
        pred: Predicted ratings.  # [n]
        target: True ratings.  # [n]

    Returns:
        The RMSE.
    """
    _check_pair(pred, target)
    return float((pred.double() - target.double()).pow(2).mean().sqrt())


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error: ``(1/n) Σ |r̂ − r|``.

    Args:
        pred: Predicted ratings.  # [n]
        target: True ratings.  # [n]

    Returns:
        The MAE.
    """
    _check_pair(pred, target)
    return float((pred.double() - target.double()).abs().mean())


def _grouped_blocks(users: torch.Tensor, pred: torch.Tensor, target: torch.Tensor):
    """Yield padded per-user blocks ``(pred [C, L], target [C, L], valid [C, L])``.

    Users are sorted by their number of ratings and cut into chunks within power-of-two size
    classes, so each chunk pads only to its own largest user and holds at most about
    ``FCP_PAIR_BUDGET`` pair cells (C · L²); a single larger user gets a chunk of its own.
    """
    device = users.device
    _, inverse, counts = torch.unique(users, return_inverse=True, return_counts=True)
    by_size = torch.argsort(counts, stable=True)  # group ids, fewest ratings first
    rank = torch.empty_like(by_size)
    rank[by_size] = torch.arange(by_size.numel(), device=device)
    order = torch.argsort(rank[inverse], stable=True)  # rows grouped, groups by size
    sizes = counts[by_size]  # [n_groups], ascending
    ends = torch.cumsum(sizes, 0)
    starts = ends - sizes
    size_class = torch.ceil(torch.log2(sizes.double())).long().cpu()
    boundaries = torch.cat([torch.tensor([0]), torch.nonzero(torch.diff(size_class)).flatten() + 1,
                            torch.tensor([sizes.numel()])]).tolist()
    for lo, hi in zip(boundaries[:-1], boundaries[1:], strict=True):
        width_class = 1 << int(size_class[lo])
        per_chunk = max(1, FCP_PAIR_BUDGET // (width_class * width_class))
        for a in range(lo, hi, per_chunk):
            b = min(hi, a + per_chunk)
            n_rows = b - a
            idx = order[int(starts[a]) : int(ends[b - 1])]
            row = torch.arange(n_rows, device=device).repeat_interleave(sizes[a:b])
            col = torch.arange(idx.numel(), device=device) - (starts[a:b] - starts[a])[row]
            shape = (n_rows, int(sizes[b - 1]))
            p = torch.zeros(shape, dtype=pred.dtype, device=device)
            t = torch.zeros(shape, dtype=target.dtype, device=device)
            valid = torch.zeros(shape, dtype=torch.bool, device=device)
            p[row, col], t[row, col], valid[row, col] = pred[idx], target[idx], True
            yield p, t, valid


def fcp(
    users: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    average: Literal["pooled", "user"] = "pooled",
) -> float:
    """Fraction of concordant pairs (Koren, "Factor in the Neighbors", 2010).

    For each user ``u`` and each pair of that user's test items with ``r_ui > r_uj`` (pairs with
    equal true ratings are skipped): concordant when ``r̂_ui > r̂_uj``, discordant otherwise (a
    tied prediction counts as discordant, as in Koren's ``r̂_ui ≥ r̂_uj``)::

        n_c(u) = |{(i, j): r_ui > r_uj, r̂_ui > r̂_uj}|,  n_d(u) = |{(i, j): r_ui > r_uj,
        r̂_ui ≤ r̂_uj}|
        pooled (Koren):  FCP = Σ_u n_c(u) / Σ_u (n_c(u) + n_d(u))
        user:            FCP = mean over users with a comparable pair of n_c(u) / (n_c + n_d)

    Neither is ``surprise.accuracy.fcp``, which divides the mean of n_c(u) over users with
    n_c(u) > 0 by that plus the mean of n_d(u) over users with n_d(u) > 0 (on ml-latest-small
    it reads 0.015-0.026 lower than the pooled figure; bench/rating_bench.py reports both).

    Vectorised: users are packed into padded ``[C, L]`` blocks and compared as ``[C, L, L]``.

    Args:
        users: User of each test rating.  # [n]
        pred: Predicted ratings.  # [n]
        target: True ratings.  # [n]
        average: ``"pooled"`` (Koren's definition, the default) or ``"user"``.

    Returns:
        FCP in [0, 1].

    Raises:
        ValueError: On shape mismatch, an unknown ``average``, or no comparable pair at all.
    """
    _check_pair(pred, target)
    if users.shape != pred.shape:
        raise ValueError(f"users {tuple(users.shape)} must match pred {tuple(pred.shape)}")
    if average not in ("pooled", "user"):
        raise ValueError(f"average={average!r} must be 'pooled' or 'user'")
    n_c, n_d = [], []
    for p, t, valid in _grouped_blocks(users, pred, target):
        both = valid[:, :, None] & valid[:, None, :]
        ordered = both & (t[:, :, None] > t[:, None, :])  # [C, L, L]: r_ui > r_uj
        higher = p[:, :, None] > p[:, None, :]
        n_c.append((ordered & higher).sum((1, 2)))
        n_d.append((ordered & ~higher).sum((1, 2)))
    conc, disc = torch.cat(n_c).double(), torch.cat(n_d).double()
    total = conc + disc
    if not bool((total > 0).any()):
        raise ValueError("FCP undefined: no user has two test items with different ratings")
    if average == "pooled":
        return float(conc.sum() / total.sum())
    has = total > 0
    return float((conc[has] / total[has]).mean())


@torch.no_grad()
def predict(model: nn.Module, data: RatingData, batch_size: int = 65536) -> torch.Tensor:
    """Predict every row of ``data`` in large batches, in eval mode, without gradients.

    The model's train/eval mode is restored afterwards.

    Args:
        model: A model with ``score(users, items)``.
        data: Interactions on the model's device.
        batch_size: Rows per forward pass.

    Returns:
        Predictions, float32, on ``data.device``.  # [n]
    """
    was_training = model.training
    model.eval()
    try:
        parts = [
            model.score(data.users[s : s + batch_size], data.items[s : s + batch_size]).float()
            for s in range(0, len(data), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, device=data.device)


def evaluate_ratings(
    model: nn.Module, data: RatingData, batch_size: int = 65536, fcp_average: str = "pooled"
) -> dict[str, float]:
    """RMSE, MAE and FCP of ``model`` on ``data``.

    Args:
        model: A rating model (``predicts_ratings`` must not be False).
        data: Test interactions on the model's device.
        batch_size: Rows per forward pass.
        fcp_average: See :func:`fcp`.

    Returns:
        ``{"rmse", "mae", "fcp", "n_ratings"}``.
    """
    if not getattr(model, "predicts_ratings", True):
        raise ValueError(f"{type(model).__name__} does not predict ratings; "
                         "evaluate it with ranking metrics (evaluation.topk)")
    pred = predict(model, data, batch_size)
    return {
        "rmse": rmse(pred, data.ratings),
        "mae": mae(pred, data.ratings),
        "fcp": fcp(data.users, pred, data.ratings, average=fcp_average),  # type: ignore[arg-type]
        "n_ratings": float(len(data)),
    }
