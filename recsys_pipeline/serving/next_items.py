"""Next-item recommendations for item sequences given in original ids (sessions).

A sequence model (GRU4Rec, SASRec, co-occurrence) scores the item that follows a sequence; it
has no user index, so it can serve any sequence: an anonymous visitor's session, or a user's
history. :func:`next_items` takes sessions as flat rows (a session label per row, the original
``movieId``, an optional time per row) and returns each session's top-k next items:

* rows are ordered within a session by time, ties (and sessions without times) in row order;
* items the model's vocabulary lacks are dropped (counted); the last ``width`` known items
  are the model's input, as in training;
* every known item of the session scores ``-inf`` (never recommended back), as in the
  next-item evaluation protocol;
* a session with no known item gets no rows (the model has nothing to go on).

The MLflow pyfunc of a sequence model (``tracking_export.NextItemsModel``) is a thin adapter
over this function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recsys_pipeline.data.encode import find_positions
from recsys_pipeline.models.ranking_base import SequenceModel, module_device
from recsys_pipeline.models.two_tower import recent_items

NEG_INF = float("-inf")
# beside a logged next-item model: {"width": items of input per session}
WIDTH_FILE = "next_items.json"


@dataclass(frozen=True)
class NextItems:
    """Top-k next items of each session, flat, sessions ascending and best first within one.

    Attributes:
        session: Session code (index into the caller's session labels) of each row.  # [m]
        rank: 1-based rank within the session.  # [m]
        item_id: Original item id.  # [m]
        score: The model's score.  # [m] float32
        n_unknown_rows: Input rows whose item the model's vocabulary lacks (dropped).
        empty_sessions: Codes of the sessions with no known item (no rows for them).
    """

    session: np.ndarray
    rank: np.ndarray
    item_id: np.ndarray
    score: np.ndarray
    n_unknown_rows: int
    empty_sessions: np.ndarray


def next_items(model: SequenceModel, token_item_ids: np.ndarray, width: int,
               sessions: np.ndarray, n_sessions: int, item_ids: np.ndarray, k: int,
               times: np.ndarray | None = None, batch_size: int = 1024) -> NextItems:
    """Each session's top-``k`` next items (see the module doc).

    Args:
        model: A trained sequence model over ``len(token_item_ids)`` items.
        token_item_ids: Original item id of each token ``1..n_vocab``.  # [n_vocab]
        width: Items of input per session (the model's training sequence width).
        sessions: Session code of each row, in ``0..n_sessions-1``.  # [n]
        n_sessions: Number of sessions.
        item_ids: Original item id of each row.  # [n]
        k: List length (fewer where a session leaves fewer items to rank).
        times: Integer time of each row (None: row order is the order).  # [n]
        batch_size: Sessions per scoring call.

    Returns:
        The lists, flat (:class:`NextItems`).

    Raises:
        ValueError: Shapes that disagree, a session code out of range, ``k`` or ``width``
            below 1, or a vocabulary that does not fit the model.
    """
    token_item_ids = np.asarray(token_item_ids, np.int64)
    sessions, item_ids = np.asarray(sessions, np.int64), np.asarray(item_ids, np.int64)
    if len(token_item_ids) != model.n_vocab:
        raise ValueError(f"{len(token_item_ids)} token item ids for a model of "
                         f"{model.n_vocab} tokens")
    if sessions.shape != item_ids.shape or sessions.ndim != 1:
        raise ValueError(f"sessions {sessions.shape} and item ids {item_ids.shape} must be "
                         "1-D of one length")
    if len(sessions) and (int(sessions.min()) < 0 or int(sessions.max()) >= n_sessions):
        raise ValueError(f"session codes must be in 0..{n_sessions - 1}")
    if k < 1 or width < 1:
        raise ValueError(f"k={k} and width={width} must be >= 1")
    order_key = (np.arange(len(sessions), dtype=np.int64) if times is None
                 else np.asarray(times, np.int64))
    if order_key.shape != sessions.shape:
        raise ValueError(f"times {order_key.shape} must match sessions {sessions.shape}")
    tokens = find_positions(token_item_ids, item_ids) + 1  # 0: not in the vocabulary
    known = tokens > 0
    s, t = sessions[known], tokens[known]
    # last `width` known items per session, left-padded with 0, newest last
    rows = recent_items(s, t, order_key[known], n_sessions, 0, width)
    has_items = np.bincount(s, minlength=n_sessions) > 0
    device = module_device(model)
    k = min(k, model.n_vocab)
    out_s, out_r, out_i, out_v = [], [], [], []
    ranks = np.arange(1, k + 1)
    for start in range(0, n_sessions, batch_size):
        stop = min(start + batch_size, n_sessions)
        codes = np.flatnonzero(has_items[start:stop]) + start
        if not len(codes):
            continue
        scores = model.score_next(torch.from_numpy(rows[codes]).to(device))[:, 1:].float()
        # every known item of these sessions, not only the last `width`, is masked
        mine = (s >= start) & (s < stop)
        local = np.searchsorted(codes, s[mine])
        scores[torch.from_numpy(local).to(device),
               torch.from_numpy(t[mine] - 1).to(device)] = NEG_INF
        top = torch.topk(scores, k, dim=1)
        values, index = top.values.cpu().numpy(), top.indices.cpu().numpy()
        keep = np.isfinite(values)  # a prefix of each row: -inf sorts last
        out_s.append(np.broadcast_to(codes[:, None], values.shape)[keep])
        out_r.append(np.broadcast_to(ranks, values.shape)[keep])
        out_i.append(token_item_ids[index[keep]])
        out_v.append(values[keep].astype(np.float32))
    return NextItems(np.concatenate(out_s) if out_s else np.zeros(0, np.int64),
                     np.concatenate(out_r) if out_r else np.zeros(0, np.int64),
                     np.concatenate(out_i) if out_i else np.zeros(0, np.int64),
                     np.concatenate(out_v) if out_v else np.zeros(0, np.float32),
                     int((~known).sum()), np.flatnonzero(~has_items))

