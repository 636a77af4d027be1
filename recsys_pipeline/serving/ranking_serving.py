"""Ranking models behind the rating models' serving interface, in original ids.

Serving (``serving.recommend``, ``serving.fold_in``, ``lake_models.lake_top_k``) needs a model
with ``n_users`` / ``n_items`` matching its id maps and ``score_all(users) -> [B, n_items]``.
Each ranking family gets that, with id maps of its own item index space:

* **two-tower**: already a ``RatingModel`` over ``prepared/{user,item}_map``; served as is.
* **fold-in models** (autoencoder, Mult-VAE, EASE): :class:`FoldInServing`. Items are the
  columns of ``prepared/strong_generalization_items`` (item ``idx`` = column). A user's input
  row is the model's stored training row when it has one; otherwise (strong-generalization
  held-out users, users the k-core filter dropped) the user's train-split ratings ``>=`` the
  positive threshold, binarized over the columns (:func:`fold_in_rows`). Scores are
  ``score_all_from(row)``; items of the row score ``-inf`` (never recommended back).
* **sequence models** (GRU4Rec, SASRec, co-occurrence): :class:`SequenceServing`. Items are
  the vocabulary of ``prepared/session_sequences`` (item ``idx`` = token − 1). A user's input
  is the chronological train-split sequence (timestamp, ties in row order; out-of-vocabulary
  items dropped; the last ``max_len`` kept, :func:`user_sequences`); scores are
  ``score_next(tokens)`` without the padding column, the sequence's items ``-inf``. A user
  with no in-vocabulary item scores ``-inf`` everywhere (no list).

Users are always ``prepared/user_map``'s. The seen items a caller masks on top (the train
split, translated through original ids) therefore apply unchanged.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.data.lake import read_parquet
from recsys_pipeline.data.order import timestamps
from recsys_pipeline.data.sparse import load_csr
from recsys_pipeline.evaluation.rescore import known_pairs
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.models.ranking_base import FoldInModel, SequenceModel, load_ranking_model
from recsys_pipeline.models.two_tower import TwoTowerModel, recent_items
from recsys_pipeline.serving.tables import check_model_maps
from recsys_pipeline.training.ranking_data import CSRTensors
from recsys_pipeline.training.ranking_experiment import StrongGenSpec

PREPARED = "prepared"
FOLD_IN_ITEMS_FILE = "strong_generalization_items.parquet"
STRONG_TRAIN_FILE = "strong_generalization_matrix/train_explicit.npz"
SESSIONS_ARRAYS = "session_sequences/arrays.npz"  # data.store.ARRAYS_FILE
TOPK_THRESHOLD = 4.0  # training.ranking_experiment.run_topk: two-tower positives
COLUMN = "column"  # strong_generalization_items: matrix column of each kept item
NEG_INF = float("-inf")


class RankingServing(RatingModel):
    """A ranking model wrapped as a ``RatingModel`` over the id maps it is served with.

    Attributes:
        model: The wrapped ranking model (a submodule: ``.to`` / ``.eval`` reach it).
        family: The wrapped model's family (``ease``, ``sasrec``, ...).
    """

    config_cls: ClassVar[type] = object
    trainable: ClassVar[bool] = False
    predicts_ratings: ClassVar[bool] = False

    def __init__(self, model: torch.nn.Module, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items, model.config)
        self.model = model
        self.family = model.family  # type: ignore[misc]  # per instance: the wrapped family

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Score of each pair: each distinct user scored once.  # [B]"""
        uniq, inverse = torch.unique(users, return_inverse=True)
        return self._score_all(uniq)[inverse, items]


class FoldInServing(RankingServing):
    """A fold-in model scoring each user from a stored input row (see the module doc).

    Args:
        model: The trained fold-in model.
        rows: Input rows, one per user of the user map.  # [n_users, n_items] CSR
        threshold: Ratings ``>=`` this are positives (the model's training threshold).
    """

    def __init__(self, model: FoldInModel, rows: sp.csr_matrix, threshold: float) -> None:
        super().__init__(model, rows.shape[0], model.n_items)
        if rows.shape[1] != model.n_items:
            raise ValueError(f"rows have {rows.shape[1]} item columns, {type(model).__name__} "
                             f"has {model.n_items}")
        csr = CSRTensors.from_scipy(rows)
        self.register_buffer("row_indptr", csr.indptr)
        self.register_buffer("row_indices", csr.indices)
        self.register_buffer("row_values", csr.values)
        self.threshold = float(threshold)

    def rows(self, users: torch.Tensor) -> torch.Tensor:
        """The users' dense input rows.  # [B, n_items]"""
        csr = CSRTensors(self.row_indptr, self.row_indices, self.row_values, self.n_items)
        return csr.dense_rows(users)

    def score_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``score_all_from(rows)`` with each row's own items at ``-inf``.  # [B, n_items]"""
        return self.model.score_all_from(rows).masked_fill(rows.to(self.row_values.device) > 0,
                                                           NEG_INF)

    def _score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.score_rows(self.rows(users))


class SequenceServing(RankingServing):
    """A next-item model scoring each user's stored token sequence (see the module doc).

    Args:
        model: The trained sequence model.
        tokens: Left-padded token rows, one per user of the user map (0 = padding; a row
            may be all padding).  # [n_users, L]
    """

    def __init__(self, model: SequenceModel, tokens: np.ndarray) -> None:
        super().__init__(model, tokens.shape[0], model.n_vocab)
        self.register_buffer("tokens", torch.from_numpy(np.asarray(tokens, np.int32)))

    def score_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-item scores of left-padded rows, the rows' own items ``-inf``.  # [B, n_items]

        Token ``t`` scores in column ``t − 1``; an all-padding row scores ``-inf`` throughout.
        """
        tokens = tokens.long().to(self.tokens.device)
        out = torch.full((tokens.shape[0], self.n_items), NEG_INF, device=tokens.device)
        real = tokens[:, -1] != 0
        if bool(real.any()):
            out[real] = self.model.score_next(tokens[real])[:, 1:].to(out.device)
        row, col = torch.nonzero(tokens, as_tuple=True)
        out[row, tokens[row, col] - 1] = NEG_INF
        return out

    def _score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.score_tokens(self.tokens[users])


def fold_in_item_maps(users: pa.Table, columns: pa.Table) -> IdMaps:
    """Id maps of a fold-in model: the user map, and items = the matrix columns.

    Args:
        users: ``prepared/user_map``.
        columns: ``prepared/strong_generalization_items`` (column, item_idx, item_id, title).
    """
    items = columns.sort_by(COLUMN)
    if not np.array_equal(items.column(COLUMN).to_numpy(), np.arange(items.num_rows)):
        raise ValueError(f"strong_generalization_items: column {COLUMN!r} is not 0..n-1")
    table = pa.table({S.ITEM_IDX: items.column(COLUMN), S.ITEM_ID: items.column(S.ITEM_ID),
                      S.TITLE: items.column(S.TITLE)})
    return IdMaps(users, table.cast(S.ITEM_MAP_SCHEMA))


def vocab_item_maps(maps: IdMaps, vocab: np.ndarray) -> IdMaps:
    """Id maps of a sequence model: the user map, and items = the vocabulary (idx = token − 1).

    Args:
        maps: The lake's id maps (``vocab`` holds their ``item_idx``).
        vocab: ``item_idx`` of each token ``1..n_vocab``.  # [n_vocab]
    """
    picked = maps.items.take(pa.array(np.asarray(vocab, np.int64)))
    table = picked.set_column(0, S.ITEM_IDX, pa.array(np.arange(len(vocab), dtype=np.int32)))
    return IdMaps(maps.users, table.cast(S.ITEM_MAP_SCHEMA))


def positive_rows(train: pa.Table, maps: IdMaps, threshold: float) -> sp.csr_matrix:
    """Binary rows of the ratings ``>= threshold`` in ``maps``' space (unknown ids dropped).

    Args:
        train: ``user_id``, ``item_id``, ``rating`` columns (e.g. the train split).
        maps: Users and items of the rows and columns.
        threshold: Positive threshold.

    Returns:
        ``[n_users, n_items]`` float32 CSR of ones.
    """
    pos = pc.greater_equal(train.column(S.RATING), pa.scalar(threshold, pa.float32()))
    kept = train.filter(pos)
    _, u, i = known_pairs(kept.column(S.USER_ID).to_numpy(), kept.column(S.ITEM_ID).to_numpy(),
                          maps)
    rows = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), (maps.n_users, maps.n_items))
    rows.data[:] = 1.0  # duplicates were summed
    return rows


def fold_in_rows(model: FoldInModel, maps: IdMaps, train: pa.Table,
                 threshold: float) -> sp.csr_matrix:
    """Each user's input row: the model's stored row when not empty, else train positives.

    Args:
        model: A fold-in model whose stored rows are indexed by ``maps``' users.
        maps: From :func:`fold_in_item_maps`.
        train: The train split (``user_id``, ``item_id``, ``rating``).
        threshold: Ratings ``>=`` this are positives.

    Returns:
        ``[n_users, n_items]`` float32 CSR.
    """
    check_model_maps(model, maps)
    h = model.history()
    history = sp.csr_matrix((h.values.cpu().numpy(), h.indices.cpu().numpy(),
                             h.indptr.cpu().numpy()), shape=(model.n_users, model.n_items))
    stored = (history.getnnz(1) > 0).astype(np.float32)
    lake = positive_rows(train, maps, threshold)
    return sp.csr_matrix(sp.diags(stored) @ history + sp.diags(1.0 - stored) @ lake)


def user_sequences(train: pa.Table, maps: IdMaps, max_len: int) -> np.ndarray:
    """Each user's last ``max_len`` train items by time as left-padded tokens.

    Args:
        train: ``user_id``, ``item_id``, ``timestamp`` columns (e.g. the train split).
        maps: From :func:`vocab_item_maps` (item ``idx`` = token − 1).
        max_len: Width of the rows.

    Returns:
        Tokens (0 = padding, newest last).  # [n_users, max_len] int32
    """
    mask, u, i = known_pairs(train.column(S.USER_ID).to_numpy(),
                             train.column(S.ITEM_ID).to_numpy(), maps)
    # tokens are item idx + 1; padding value 0 passed as recent_items' "n_items"
    return recent_items(u, i + 1, timestamps(train)[mask], maps.n_users, 0,
                        max_len).astype(np.int32)


def serving_for(model: torch.nn.Module, maps: IdMaps, train: pa.Table,
                fold_in_columns: pa.Table | None = None, vocab: np.ndarray | None = None,
                threshold: float = 4.0, max_len: int = 50) -> tuple[RatingModel, IdMaps]:
    """A loaded ranking model ready to serve, with the id maps of its item space.

    Args:
        model: From ``models.ranking_base.load_ranking_model``.
        maps: The lake's id maps (``prepared/{user,item}_map``).
        train: The lake's train split.
        fold_in_columns: ``prepared/strong_generalization_items`` (fold-in models).
        vocab: The session vocabulary (sequence models).
        threshold: Positive threshold of a fold-in model.
        max_len: Sequence width of a sequence model.

    Returns:
        ``(model, maps)``: a two-tower model as is, else a :class:`FoldInServing` /
        :class:`SequenceServing`.

    Raises:
        ValueError: A table the model's family needs is missing, or does not fit the model.
    """
    if isinstance(model, FoldInModel):
        if fold_in_columns is None:
            raise ValueError(f"{type(model).__name__} needs strong_generalization_items")
        fmaps = fold_in_item_maps(maps.users, fold_in_columns)
        return FoldInServing(model, fold_in_rows(model, fmaps, train, threshold),
                             threshold), fmaps
    if isinstance(model, SequenceModel):
        if vocab is None or len(vocab) != model.n_vocab:
            have = "none" if vocab is None else len(vocab)
            raise ValueError(f"{type(model).__name__} has {model.n_vocab} tokens, the session "
                             f"vocabulary {have}: rebuild session_sequences or the model")
        smaps = vocab_item_maps(maps, vocab)
        return SequenceServing(model, user_sequences(train, smaps, max_len)), smaps
    if isinstance(model, TwoTowerModel):
        check_model_maps(model, maps)
        return model, maps
    raise ValueError(f"no serving rule for {type(model).__name__}")


def lake_positive_threshold(explicit_train: sp.spmatrix | None,
                            default: float = StrongGenSpec.positive_threshold) -> float:
    """The fold-in models' positive threshold, read off the strong-generalization matrix.

    That matrix keeps only ratings ``>=`` the threshold, so its smallest stored rating is the
    threshold whenever a rating equals it, and otherwise selects the same positives from the
    data. ``default`` when the matrix is missing or empty.

    Args:
        explicit_train: ``prepared/strong_generalization_matrix/train_explicit.npz``.
        default: Fallback (the ``StrongGenSpec`` default).
    """
    if explicit_train is None or explicit_train.nnz == 0:
        return float(default)
    return float(explicit_train.data.min())


def _fold_in_lake_tables(prepared: Path) -> tuple[pa.Table, float]:
    """A fold-in model's item columns (``strong_generalization_items``) and positive
    threshold (read off the strong-generalization train matrix) in the lake's ``prepared``."""
    columns = read_parquet(prepared / FOLD_IN_ITEMS_FILE)
    explicit = prepared / STRONG_TRAIN_FILE
    return columns, lake_positive_threshold(load_csr(explicit) if explicit.is_file() else None)


def lake_served_history(lake: str | os.PathLike[str], model: FoldInModel) -> FoldInModel:
    """A copy of a freshly trained fold-in model whose stored rows are the rows ``recommend``
    serves from (:func:`fold_in_rows`): the model's own where it has one, else the user's
    train-split positives, as the 200 strong-generalization held-out users need. For the
    logged original-id pyfunc, which has no lake to read at prediction time.

    Raises:
        FileNotFoundError: A lake table the rows need, named.
    """
    prepared = Path(lake) / PREPARED
    users = read_parquet(prepared / "user_map.parquet")
    train = read_parquet(prepared / "splits" / "train.parquet")
    columns, threshold = _fold_in_lake_tables(prepared)
    rows = fold_in_rows(model, fold_in_item_maps(users, columns), train, threshold)
    served = copy.deepcopy(model)
    served.set_history(rows)
    return served


def load_lake_serving(lake: str | os.PathLike[str], folder: Path, maps: IdMaps,
                      train: pa.Table) -> tuple[RatingModel, IdMaps]:
    """Load the ranking model in ``folder`` and what :func:`serving_for` needs from the lake.

    Reads ``prepared/strong_generalization_items.parquet`` and
    ``prepared/strong_generalization_matrix/train_explicit.npz`` (fold-in models) or
    ``prepared/session_sequences/arrays.npz`` (sequence models: vocabulary and width).

    Raises:
        FileNotFoundError: A lake file the model's family needs, named.
    """
    model = load_ranking_model(folder, map_location="cpu")
    prepared = Path(lake) / PREPARED
    if isinstance(model, FoldInModel):
        columns, threshold = _fold_in_lake_tables(prepared)
        return serving_for(model, maps, train, fold_in_columns=columns, threshold=threshold)
    if isinstance(model, SequenceModel):
        path = prepared / SESSIONS_ARRAYS
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no session vocabulary; materialize "
                                    "prepared/session_sequences")
        with np.load(path, allow_pickle=False) as npz:
            vocab, width = npz["vocab"], int(npz["train_tokens"].shape[1])
        return serving_for(model, maps, train, vocab=vocab, max_len=width)
    return serving_for(model, maps, train)
