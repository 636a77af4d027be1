"""Per-user chronological item sequences for sequential (next-item) models.

Index spaces:

* Tables (``schema.SEQUENCES_SCHEMA`` / ``schema.NEXT_ITEM_SCHEMA``) hold ``item_idx`` values
  (the encoded item space of the id maps), oldest first, so they join with the rest of the lake.
* Arrays hold **tokens**: token ``t`` in ``1 .. n_vocab`` is item ``vocab[t - 1]``; token ``0``
  is padding. ``vocab`` is the ascending ``item_idx`` of items occurring at least
  ``min_item_count`` times in train. Out-of-vocabulary items are left out of sequences (no
  UNK token), so an embedding table needs ``n_vocab + 1`` rows.
* Padding: ``tokens[r]`` is left-padded by default (zeros first, most recent item in the last
  column, as SASRec expects); ``pad_side="right"`` puts the items first.

Chronological = by timestamp, ties by input row order; across split tables, ties go to the
earlier table (train, valid_fold_in, valid, test_fold_in). Sequences keep the last ``max_len``
items.

Next-item evaluation: for ``valid`` the input is the user's train (+ valid_fold_in) rows, for
``test`` the train + valid_fold_in + valid + test_fold_in rows; the target is the user's
chronologically first in-vocabulary row of ``valid`` / ``test``. Input rows later than the
target are excluded, so no future item leaks into an input under any split method (temporal
splits never have such rows). Users without a target, or with fewer than ``min_history``
input items, get no row; the report counts them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import schema
from recsys_pipeline.data.order import chronological_order, segment_codes, timestamps
from recsys_pipeline.data.split import Splits

logger = logging.getLogger(__name__)

PAD = 0
# history tables feeding each evaluated split's input, in tie-breaking order
_HISTORY = {
    schema.VALID: (schema.TRAIN, schema.VALID_FOLD_IN),
    schema.TEST: (schema.TRAIN, schema.VALID_FOLD_IN, schema.VALID, schema.TEST_FOLD_IN),
}


@dataclass(frozen=True)
class SessionConfig:
    """Sequence building knobs.

    Attributes:
        max_len: Keep each user's last ``max_len`` items (L, the array width).
        min_item_count: Train occurrences an item needs to enter the vocabulary.
        pad_side: ``left`` (padding first, default) or ``right``. The sequence models
            (GRU4Rec, SASRec, co-occurrence) take left-padded rows only.
        min_history: Evaluation users need at least this many input items (0 keeps cold users
            with empty rows, which the sequence models cannot score).
    """

    max_len: int = 50
    min_item_count: int = 1
    pad_side: Literal["left", "right"] = "left"
    min_history: int = 1

    def __post_init__(self) -> None:
        if self.max_len < 1 or self.min_item_count < 1 or self.min_history < 0:
            raise ValueError(f"SessionConfig: need max_len, min_item_count >= 1: {self}")
        if self.pad_side not in ("left", "right"):
            raise ValueError(f"SessionConfig.pad_side: unknown {self.pad_side!r}")


@dataclass(frozen=True)
class SequenceBatch:
    """Sequences of one split, as a table and as padded arrays (rows ordered by user_idx).

    Attributes:
        table: ``SEQUENCES_SCHEMA`` (train) or ``NEXT_ITEM_SCHEMA`` (valid/test), item_idx space.
        user_idx: ``[n_rows]`` int32.
        tokens: ``[n_rows, max_len]`` int32 tokens, 0 = padding.
        lengths: ``[n_rows]`` int32 number of real tokens per row.
        targets: ``[n_rows]`` int32 target tokens (valid/test), None for train.
    """

    table: pa.Table
    user_idx: np.ndarray
    tokens: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray | None = None


@dataclass(frozen=True)
class Sessions:
    """Vocabulary plus the train, valid and test sequence batches.

    Attributes:
        vocab: ``[n_vocab]`` int32 item_idx; token ``t`` is item ``vocab[t - 1]``.
        train: Training sequences.
        valid: Next-item inputs and targets for validation.
        test: Next-item inputs and targets for test.
        report: Counts (vocabulary size, rows out of vocabulary, users without a target, ...).
    """

    vocab: np.ndarray
    train: SequenceBatch
    valid: SequenceBatch
    test: SequenceBatch
    report: dict[str, int]


def build_vocab(train_item_idx: np.ndarray, n_items: int, min_item_count: int) -> np.ndarray:
    """Ascending item_idx of items with at least ``min_item_count`` train occurrences."""
    counts = np.bincount(train_item_idx, minlength=n_items)
    return np.flatnonzero(counts >= min_item_count).astype(np.int32)


def token_lookup(vocab: np.ndarray, n_items: int) -> np.ndarray:
    """``[n_items]`` int32 array: item_idx -> token (0 where the item is out of vocabulary)."""
    lookup = np.zeros(n_items, np.int32)
    lookup[vocab] = np.arange(1, len(vocab) + 1, dtype=np.int32)
    return lookup


def tokens_to_items(tokens: np.ndarray, vocab: np.ndarray) -> np.ndarray:
    """Tokens -> item_idx (ValueError on padding or out-of-range tokens)."""
    tokens = np.asarray(tokens)
    if ((tokens < 1) | (tokens > len(vocab))).any():
        raise ValueError(f"tokens outside 1..{len(vocab)} (0 is padding, not an item)")
    return vocab[tokens - 1]


def sequences_to_pairs(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Explode a sequences table into (user_idx, item_idx) rows, sequence order kept."""
    seqs = table.column(schema.ITEM_IDX_SEQ)
    users = table.column(schema.USER_IDX).to_numpy()
    parents = pc.list_parent_indices(seqs).to_numpy()
    return users[parents], pc.list_flatten(seqs).to_numpy()


@dataclass(frozen=True)
class _Rows:
    """Interaction rows sorted by (user, timestamp), ties in input order."""

    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray

    @staticmethod
    def of(tables: list[pa.Table], lookup: np.ndarray) -> _Rows:
        """In-vocabulary rows of ``tables`` (concatenated in order), sorted chronologically."""
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        user = table.column(schema.USER_IDX).to_numpy()
        item = table.column(schema.ITEM_IDX).to_numpy()
        ts = timestamps(table)
        keep = lookup[item] > 0
        if not keep.all():
            user, item, ts = user[keep], item[keep], ts[keep]
        order = chronological_order(user, ts)
        return _Rows(user[order], item[order], ts[order])

    def sizes(self, n_users: int) -> np.ndarray:
        """Rows per user; a binary search per user, as rows are sorted by user."""
        bounds = np.searchsorted(self.user, np.arange(n_users + 1, dtype=self.user.dtype))
        return np.diff(bounds)

    def __len__(self) -> int:
        return len(self.user)

    def select(self, mask: np.ndarray) -> _Rows:
        """Rows where ``mask`` holds (order kept)."""
        return _Rows(self.user[mask], self.item[mask], self.ts[mask])

    def merge(self, later: _Rows) -> _Rows:
        """Both row sets in chronological order; on ties ``self``'s rows come first."""
        if len(later) == 0:
            return self
        user = np.concatenate([self.user, later.user])
        ts = np.concatenate([self.ts, later.ts])
        # two sorted runs: the stable sort (timsort) merges them in linear time
        order = chronological_order(user, ts)
        return _Rows(user[order], np.concatenate([self.item, later.item])[order], ts[order])


def _last(rows: _Rows, n_users: int, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's last ``max_len`` rows.

    Returns:
        ``(users, lengths, items)``: users with a sequence (ascending), their lengths, and the
        concatenated items (user after user, oldest first).
    """
    size = rows.sizes(n_users)
    lengths = np.minimum(size, max_len)
    keep = segment_codes(np.stack([size - lengths, lengths], axis=1), np.array([False, True]))
    users = np.flatnonzero(lengths).astype(np.int32)
    return users, lengths[users].astype(np.int32), rows.item[keep].astype(np.int32)


def _pad(lengths: np.ndarray, values: np.ndarray, max_len: int, side: str) -> np.ndarray:
    """Place ragged ``values`` into a zero ``[len(lengths), max_len]`` array."""
    out = np.full((len(lengths), max_len), PAD, np.int32)  # [n_rows, max_len]
    cols = np.arange(max_len)
    if side == "left":
        filled = cols >= (max_len - lengths)[:, None]
    else:
        filled = cols < lengths[:, None]
    out[filled] = values  # boolean assignment fills row-major: user after user, oldest first
    return out


def _batch(
    users: np.ndarray,
    lengths: np.ndarray,
    items: np.ndarray,
    lookup: np.ndarray,
    config: SessionConfig,
    target_items: np.ndarray | None = None,
) -> SequenceBatch:
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)
    arrays = [
        pa.array(users, schema.IDX_TYPE),
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(items, schema.IDX_TYPE)),
        pa.array(lengths, pa.int32()),
    ]
    out_schema = schema.SEQUENCES_SCHEMA
    if target_items is not None:
        arrays.append(pa.array(target_items, schema.IDX_TYPE))
        out_schema = schema.NEXT_ITEM_SCHEMA
    table = pa.Table.from_arrays(arrays, schema=out_schema)
    tokens = _pad(lengths, lookup[items], config.max_len, config.pad_side)
    targets = None if target_items is None else lookup[target_items]
    return SequenceBatch(table, users, tokens, lengths, targets)


def _targets(
    table: pa.Table, lookup: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per user: first in-vocabulary item of ``table`` (-1 if none), its time, and user count."""
    n_present = int(
        np.count_nonzero(np.bincount(table.column(schema.USER_IDX).to_numpy(), minlength=n_users))
    )
    rows = _Rows.of([table], lookup)
    size = rows.sizes(n_users)
    users = np.flatnonzero(size)
    first = (np.cumsum(size) - size)[users]
    target_item = np.full(n_users, -1, np.int64)
    target_ts = np.full(n_users, np.iinfo(np.int64).min, np.int64)
    target_item[users], target_ts[users] = rows.item[first], rows.ts[first]
    return target_item, target_ts, n_present


def _next_item_batch(
    splits: Splits,
    name: str,
    train: _Rows,
    n_users: int,
    lookup: np.ndarray,
    config: SessionConfig,
    report: dict[str, int],
) -> SequenceBatch:
    tables = splits.tables()
    target_item, target_ts, n_present = _targets(tables[name], lookup, n_users)
    has_target = target_item >= 0
    report[f"{name}_users"] = n_present
    report[f"{name}_users_without_target"] = n_present - int(np.count_nonzero(has_target))
    extra = [tables[t] for t in _HISTORY[name][1:] if tables[t].num_rows]
    history = train.merge(_Rows.of(extra, lookup)) if extra else train
    # inputs: rows of users with a target, not later than that target
    usable = has_target[history.user]
    keep = usable & (history.ts <= target_ts[history.user])
    report[f"{name}_history_rows_after_target"] = int(np.count_nonzero(usable & ~keep))
    users, lengths, items = _last(history.select(keep), n_users, config.max_len)
    full_len = np.zeros(n_users, np.int32)
    full_len[users] = lengths
    enough = has_target & (full_len >= config.min_history)
    report[f"{name}_users_short_history"] = int(np.count_nonzero(has_target & ~enough))
    items = items[np.repeat(enough[users], lengths)]
    users_out = np.flatnonzero(enough).astype(np.int32)
    return _batch(users_out, full_len[users_out], items, lookup, config, target_item[users_out])


def seen_tokens(
    splits: Splits, batch: SequenceBatch, vocab: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Every in-vocabulary item each row of a next-item batch had seen before its target.

    ``batch.tokens`` keeps only the last ``max_len`` input items; this is the whole input
    history (the rows ``build_sessions`` chose the input from: the history tables of ``name``
    not later than the row's target), so an evaluation can exclude items seen before the
    truncated window too.

    Args:
        splits: The splits ``batch`` was built from.
        batch: ``Sessions.valid`` or ``Sessions.test``.
        vocab: ``Sessions.vocab``.
        name: ``"valid"`` or ``"test"``.

    Returns:
        ``(indptr, tokens)``: row ``r``'s seen tokens are ``tokens[indptr[r]:indptr[r+1]]``
        (CSR, int64).  # [n_rows + 1], [nnz]
    """
    if name not in _HISTORY:
        raise ValueError(f"seen_tokens: name must be one of {list(_HISTORY)}, got {name!r}")
    tables = splits.tables()
    n_users = 1 + max(
        [int(batch.user_idx.max()) if batch.user_idx.size else -1]
        + [int(pc.max(t.column(schema.USER_IDX)).as_py()) for t in tables.values() if t.num_rows]
    )
    n_items = 1 + max(
        [int(vocab.max()) if vocab.size else -1]
        + [int(pc.max(t.column(schema.ITEM_IDX)).as_py()) for t in tables.values() if t.num_rows]
    )
    lookup = token_lookup(vocab, n_items)
    target_item, target_ts, _ = _targets(tables[name], lookup, n_users)
    history = _Rows.of([tables[t] for t in _HISTORY[name]], lookup)
    keep = (target_item[history.user] >= 0) & (history.ts <= target_ts[history.user])
    history = history.select(keep)
    row_of_user = np.full(n_users, -1, np.int64)
    row_of_user[batch.user_idx] = np.arange(batch.user_idx.size)
    rows = row_of_user[history.user]
    kept = rows >= 0
    rows, tokens = rows[kept], lookup[history.item[kept]].astype(np.int64)
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(batch.user_idx.size + 1, np.int64)
    indptr[1:] = np.cumsum(np.bincount(rows, minlength=batch.user_idx.size))
    return indptr, tokens[order]


def build_sessions(splits: Splits, n_users: int, n_items: int, config: SessionConfig) -> Sessions:
    """Build the vocabulary, train sequences and next-item valid/test batches.

    Args:
        splits: Rating splits (any method).
        n_users: Size of the user index space (from the id maps).
        n_items: Size of the item index space (from the id maps).
        config: Lengths, vocabulary threshold, padding side.

    Returns:
        :class:`Sessions` (index spaces and padding as in the module docstring).
    """
    for name, table in splits.tables().items():
        for col, n in ((schema.USER_IDX, n_users), (schema.ITEM_IDX, n_items)):
            values = table.column(col).to_numpy()
            if len(values) and (values.min() < 0 or values.max() >= n):
                raise ValueError(f"build_sessions: {name}.{col} outside [0, {n})")
    vocab = build_vocab(
        splits.train.column(schema.ITEM_IDX).to_numpy(), n_items, config.min_item_count
    )
    lookup = token_lookup(vocab, n_items)
    train_rows = _Rows.of([splits.train], lookup)
    report = {
        "n_vocab": len(vocab),
        "train_rows_out_of_vocab": splits.train.num_rows - len(train_rows),
    }
    users, lengths, items = _last(train_rows, n_users, config.max_len)
    train = _batch(users, lengths, items, lookup, config)
    report["train_sequences"] = len(users)
    valid, test = (
        _next_item_batch(splits, name, train_rows, n_users, lookup, config, report)
        for name in (schema.VALID, schema.TEST)
    )
    logger.info("sessions: %s", report)
    return Sessions(vocab, train, valid, test, report)
