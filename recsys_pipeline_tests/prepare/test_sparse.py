"""CSR matrices: hand-worked entries, one shared shape, binarization, exact round trips, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings

from recsys_pipeline.data.sparse import (
    SparseConfig,
    build_matrices,
    csr_to_ratings,
    load_csr,
    load_matrices,
    ratings_to_csr,
    save_csr,
    save_matrices,
)
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline_tests.prepare.frames import encoded_table, rating_rows_strategy

# 3 users x 4 items, asymmetric so a transpose cannot pass
ROWS = [(0, 3, 5.0, 1), (0, 1, 2.0, 2), (2, 0, 3.5, 3), (1, 2, 4.0, 4), (2, 3, 1.0, 5)]


def test_entries_and_shape() -> None:
    m = ratings_to_csr(encoded_table(ROWS), 3, 5)  # one unused item column
    assert m.shape == (3, 5) and m.dtype == np.float32 and m.has_canonical_format
    assert m.toarray().tolist() == [
        [0.0, 2.0, 0.0, 5.0, 0.0],
        [0.0, 0.0, 4.0, 0.0, 0.0],
        [3.5, 0.0, 0.0, 1.0, 0.0],
    ]
    binary = ratings_to_csr(encoded_table(ROWS), 3, 5, binarize_threshold=3.5)
    assert binary.toarray().tolist() == [[0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [1, 0, 0, 0, 0]]


def test_out_of_range_and_duplicates_raise() -> None:
    with pytest.raises(ValueError, match="item_idx"):
        ratings_to_csr(encoded_table(ROWS), 3, 3)
    dup = encoded_table(ROWS)
    dup = dup.take([0, 1, 2, 0])
    with pytest.raises(ValueError, match="1 duplicate"):
        ratings_to_csr(dup, 3, 4)


def test_split_matrices_share_one_space_and_sum_to_the_whole() -> None:
    encoded = encoded_table(ROWS + [(1, 0, 3.0, 6), (1, 1, 3.0, 7)])
    splits = split_ratings(encoded, SplitConfig("user_temporal", leave_last_k=1))
    mats = build_matrices(splits, 3, 4, SparseConfig(binarize_threshold=3.0))
    assert {m.shape for m in mats.explicit.values()} == {(3, 4)}
    total = sum(mats.explicit.values(), sp.csr_matrix((3, 4), dtype=np.float32))
    assert (total != ratings_to_csr(encoded, 3, 4)).nnz == 0
    # u0: train i3 (5.0), test i1 (2.0); u1: train i2 (4.0), valid i0 (3.0), test i1 (3.0);
    # u2: train i0 (3.5), test i3 (1.0)
    assert mats.binary["train"].toarray().tolist() == [[0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]]
    assert mats.explicit["valid"].toarray().tolist() == [[0] * 4, [3, 0, 0, 0], [0] * 4]
    assert mats.binary["test"].toarray().tolist() == [[0] * 4, [0, 1, 0, 0], [0] * 4]
    assert mats.explicit["test"].toarray().tolist() == [[0, 2, 0, 0], [0, 3, 0, 0], [0, 0, 0, 1]]
    fold, evaluation = mats.fold_in_pair("valid", "explicit")
    assert fold.nnz == 0 and evaluation is mats.explicit["valid"]


def test_strong_generalization_fold_in_pair() -> None:
    rows = [(u, i, 4.0, 10 * i + u) for u in range(4) for i in range(5)]
    config = SplitConfig("strong_generalization", n_valid_users=1, n_test_users=1)
    mats = build_matrices(split_ratings(encoded_table(rows), config), 4, 5, SparseConfig())
    fold, evaluation = mats.fold_in_pair("test")
    (user,) = np.unique(fold.nonzero()[0])
    assert fold[user].indices.tolist() == [0, 1, 2, 3] and evaluation[user].indices.tolist() == [4]
    assert mats.binary["train"][user].nnz == 0
    with pytest.raises(ValueError, match="valid or test"):
        mats.fold_in_pair("train")


@settings(max_examples=50, deadline=None)
@given(rows=rating_rows_strategy())
def test_round_trip_exact(rows) -> None:
    encoded = encoded_table(rows)
    n_users = int(encoded.column("user_idx").to_numpy().max()) + 1
    n_items = int(encoded.column("item_idx").to_numpy().max()) + 1
    user, item, value = csr_to_ratings(ratings_to_csr(encoded, n_users, n_items))
    got = sorted(zip(user.tolist(), item.tolist(), value.tolist(), strict=True))
    expected = sorted((r["user_idx"], r["item_idx"], r["rating"]) for r in encoded.to_pylist())
    assert got == expected


@pytest.mark.parametrize("compressed", [True, False])
def test_save_load_round_trip_atomic(tmp_path: Path, compressed: bool) -> None:
    m = ratings_to_csr(encoded_table(ROWS), 3, 4)
    path = save_csr(m, tmp_path / "sub" / "train.npz", compressed=compressed)
    assert [p.name for p in path.parent.iterdir()] == ["train.npz"]  # no temp file left
    loaded = load_csr(path)
    assert loaded.shape == m.shape and (loaded != m).nnz == 0 and loaded.dtype == np.float32
    import zipfile

    with zipfile.ZipFile(path) as zf:  # stored (fast to write) unless asked to compress
        want = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        assert {i.compress_type for i in zf.infolist()} == {want}


def test_matrices_io_manager_writes_uncompressed_unless_configured(tmp_path: Path) -> None:
    import zipfile

    import dagster as dg

    from recsys_pipeline.resources import build_resources

    splits = split_ratings(encoded_table(ROWS), SplitConfig("random", seed=0))
    mats = build_matrices(splits, 3, 4, SparseConfig())
    manager = build_resources(str(tmp_path))["matrices_io_manager"]
    for compressed in (False, True):
        io = manager.model_copy(update={"compressed": compressed}) if compressed else manager
        key = dg.AssetKey(["prepared", f"m{int(compressed)}"])
        context = dg.build_output_context(asset_key=key)
        io.handle_output(context, mats)
        files = sorted((tmp_path / "prepared" / f"m{int(compressed)}").glob("*.npz"))
        assert len(files) == 10
        want = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
        for f in files:
            with zipfile.ZipFile(f) as zf:
                assert {i.compress_type for i in zf.infolist()} == {want}


def test_save_load_all_matrices(tmp_path: Path) -> None:
    splits = split_ratings(encoded_table(ROWS), SplitConfig("random", seed=0))
    mats = build_matrices(splits, 3, 4, SparseConfig())
    assert len(save_matrices(mats, tmp_path, compressed=False)) == 10
    loaded = load_matrices(tmp_path)
    for name, m in mats.explicit.items():
        assert (loaded.explicit[name] != m).nnz == 0 and (
            loaded.binary[name] != mats.binary[name]
        ).nnz == 0


def test_load_missing_or_wrong_format(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_csr(tmp_path / "nope.npz")
    sp.save_npz(tmp_path / "coo.npz", sp.coo_matrix(np.eye(2)))
    with pytest.raises(ValueError, match="coo.npz.*coo"):
        load_csr(tmp_path / "coo.npz")
