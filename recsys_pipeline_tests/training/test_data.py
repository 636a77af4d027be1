"""RatingData construction and validation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
import torch

from recsys_pipeline.training.data import RatingData


def test_from_table_casts_int32_columns() -> None:
    table = pa.table({"user_idx": pa.array([0, 2], pa.int32()),
                      "item_idx": pa.array([1, 0], pa.int32()),
                      "rating": pa.array([3.5, 4.0], pa.float32())})
    data = RatingData.from_table(table, n_users=3, n_items=2)
    assert data.users.dtype == torch.long and data.ratings.dtype == torch.float32
    assert data.items.tolist() == [1, 0] and len(data) == 2
    assert len(data.subset(data.ratings > 3.7)) == 1


@pytest.mark.parametrize(("users", "items", "ratings", "message"), [
    ([0, 1], [0], [1.0, 2.0], "'item_idx' has 1 rows, 'user_idx' has 2"),
    ([0, 5], [0, 1], [1.0, 2.0], "'user_idx' has index 5 >= n=3"),
    ([0, 1], [0, -1], [1.0, 2.0], "'item_idx' has negative index -1"),
    ([0, 1], [0, 1], [1.0, np.nan], "'rating' has 1 non-finite value"),
    (np.array([0.0, 1.0]), [0, 1], [1.0, 2.0], "'user_idx' must hold integer indices"),
    (pa.array([0, None]), [0, 1], [1.0, 2.0], "'user_idx' has 1 null value"),
])
def test_invalid_input_names_the_column(users, items, ratings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RatingData.from_arrays(users, items, ratings, n_users=3, n_items=2)


def test_from_table_requires_columns() -> None:
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['rating'\]"):
        RatingData.from_table(pa.table({"user_idx": [0], "item_idx": [0]}))


def test_csr_round_trip_keeps_every_rating() -> None:
    matrix = sp.csr_matrix(np.array([[0.0, 4.5, 0.0], [3.0, 0.0, 1.0]], np.float32))
    rows = RatingData.from_csr(matrix)
    assert sorted(zip(rows.users.tolist(), rows.items.tolist(), rows.ratings.tolist(),
                      strict=True)) == [(0, 1, 4.5), (1, 0, 3.0), (1, 2, 1.0)]
    assert (rows.to_csr(2, 3) != matrix).nnz == 0
