"""Planted-structure data with known answers for the ranking models.

* :func:`make_blocks`: users in group ``g`` interact with the items of block ``g``. Groups and
  blocks have different sizes (45 users x 27 items: non-square and asymmetric), so a
  user/item transpose fails. Each training user misses exactly one item of its block (a
  different one for each user of a group); once seen items are excluded, that item must be
  ranked first. Extra held-out users (never in training) come as fold-in/held-out rows.
* :func:`make_cycle`: token sequences that follow a cycle ``t -> t % n + 1``; the next token
  after any prefix is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

GROUP_SIZES = (8, 15, 22)  # users per group
BLOCK_SIZES = (4, 9, 14)  # items per block
N_USERS, N_ITEMS = sum(GROUP_SIZES), sum(BLOCK_SIZES)


@dataclass(frozen=True)
class Blocks:
    """Training rows, their missing item, and held-out users' fold-in / held-out rows.

    Attributes:
        train: Binary training matrix.  # [N_USERS, N_ITEMS]
        train_ratings: The same pattern with block-dependent ratings in [3, 5].
        missing: The one unseen in-block item of each training user.  # [N_USERS]
        fold_in: Held-out users' fold-in rows (block minus one item).  # [n_new, N_ITEMS]
        heldout: Their held-out item (one per row).  # [n_new, N_ITEMS]
        group: Group of each training user.  # [N_USERS]
        item_block: Block of each item.  # [N_ITEMS]
    """

    train: sp.csr_matrix
    train_ratings: sp.csr_matrix
    missing: np.ndarray
    fold_in: sp.csr_matrix
    heldout: sp.csr_matrix
    group: np.ndarray
    item_block: np.ndarray


def _block_rows(groups: np.ndarray, skip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs: row r holds its group's block except item ``skip[r]``."""
    starts = np.concatenate([[0], np.cumsum(BLOCK_SIZES)[:-1]])
    rows, items = [], []
    for r, g in enumerate(groups):  # test data set-up only: tiny and clearer as a loop
        block = np.arange(starts[g], starts[g] + BLOCK_SIZES[g])
        keep = block[block != skip[r]]
        rows.append(np.full(keep.size, r))
        items.append(keep)
    return np.concatenate(rows), np.concatenate(items)


def make_blocks(n_new_per_group: int = 2, seed: int = 3) -> Blocks:
    """Build the block data (see the module docstring); deterministic for a seed."""
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(BLOCK_SIZES)[:-1]])
    group = np.repeat(np.arange(3), GROUP_SIZES)
    # the j-th user of a group misses item j (mod block size) of its block
    pos = np.concatenate([np.arange(n) for n in GROUP_SIZES])
    missing = starts[group] + pos % np.array(BLOCK_SIZES)[group]
    rows, items = _block_rows(group, missing)
    train = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, items)),
                          shape=(N_USERS, N_ITEMS))
    ratings = (3.0 + group[rows] + rng.integers(0, 2, rows.size) * 0.5).clip(3.0, 5.0)
    train_ratings = sp.csr_matrix((ratings.astype(np.float32), (rows, items)),
                                  shape=(N_USERS, N_ITEMS))
    new_group = np.repeat(np.arange(3), n_new_per_group)
    new_missing = starts[new_group] + rng.integers(0, np.array(BLOCK_SIZES)[new_group])
    r2, i2 = _block_rows(new_group, new_missing)
    shape = (new_group.size, N_ITEMS)
    fold_in = sp.csr_matrix((np.ones(r2.size, np.float32), (r2, i2)), shape=shape)
    heldout = sp.csr_matrix((np.ones(new_group.size, np.float32),
                             (np.arange(new_group.size), new_missing)), shape=shape)
    item_block = np.repeat(np.arange(3), BLOCK_SIZES)
    return Blocks(train, train_ratings, missing, fold_in, heldout, group, item_block)


@dataclass(frozen=True)
class Cycle:
    """Left-padded token rows following the cycle ``t -> t % n_vocab + 1``.

    Attributes:
        n_vocab: Tokens 1..n_vocab.
        train: Training rows.  # [n_train, max_len]
        inputs: Evaluation inputs.  # [n_eval, max_len]
        targets: The token after each input.  # [n_eval]
    """

    n_vocab: int
    train: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray


def _cycle_rows(rng: np.random.Generator, n: int, n_vocab: int, max_len: int,
                lengths: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of random start and length; returns (left-padded tokens, next token)."""
    start = rng.integers(0, n_vocab, n)
    length = rng.integers(lengths[0], lengths[1] + 1, n)
    col = np.arange(max_len)
    offset = col[None, :] - (max_len - length)[:, None]  # position within the sequence
    tokens = np.where(offset >= 0, (start[:, None] + offset) % n_vocab + 1, 0)
    nxt = (start + length) % n_vocab + 1
    return tokens.astype(np.int32), nxt.astype(np.int32)


def make_cycle(n_vocab: int = 13, max_len: int = 10, seed: int = 5) -> Cycle:
    """Build the cycle data; every input is shorter than the cycle, so no target was seen."""
    rng = np.random.default_rng(seed)
    train, _ = _cycle_rows(rng, 120, n_vocab, max_len, (2, max_len))
    inputs, targets = _cycle_rows(rng, 40, n_vocab, max_len, (1, max_len))
    return Cycle(n_vocab, train, inputs, targets)
