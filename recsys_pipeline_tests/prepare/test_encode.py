"""encode_ids / IdMaps: deterministic contiguous indices, both directions, Parquet round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_pipeline import schema
from recsys_pipeline.data.encode import (
    ITEM_MAP_FILE,
    USER_MAP_FILE,
    apply_id_maps,
    encode_ids,
    find_positions,
    load_id_maps,
    save_id_maps,
)
from recsys_pipeline_tests.prepare.frames import ratings_table

ROWS = [(42, 700, 4.0, 5), (7, 30, 3.5, 6), (42, 30, 1.0, 7), (99, 5, 2.0, 8), (7, 700, 5.0, 9)]
MOVIES = pa.Table.from_pylist(
    [
        {"item_id": 30, "title": "Thirty"},
        {"item_id": 700, "title": "Seven Hundred"},
        {"item_id": 12, "title": "Unused"},
    ],
    schema=pa.schema([pa.field("item_id", pa.int32()), pa.field("title", pa.string())]),
)


def test_indices_are_ranks_of_sorted_ids() -> None:
    encoded, maps = encode_ids(ratings_table(ROWS))
    # users 7 -> 0, 42 -> 1, 99 -> 2; items 5 -> 0, 30 -> 1, 700 -> 2
    assert encoded[schema.USER_IDX].to_pylist() == [1, 0, 1, 2, 0]
    assert encoded[schema.ITEM_IDX].to_pylist() == [2, 1, 1, 0, 2]
    assert encoded[schema.USER_ID].to_pylist() == [42, 7, 42, 99, 7]
    assert encoded.schema == schema.ENCODED_RATINGS_SCHEMA
    assert maps.users[schema.USER_ID].to_pylist() == [7, 42, 99]
    assert maps.items[schema.ITEM_IDX].to_pylist() == [0, 1, 2]
    assert (maps.n_users, maps.n_items) == (3, 3)


def test_mapping_ignores_row_order() -> None:
    _, maps = encode_ids(ratings_table(ROWS))
    encoded_rev, maps_rev = encode_ids(ratings_table(ROWS[::-1]))
    assert maps_rev.users.equals(maps.users) and maps_rev.items.equals(maps.items)
    assert encoded_rev[schema.USER_IDX].to_pylist() == [0, 2, 1, 0, 1]


def test_sparse_and_negative_ids_take_the_fallback_path() -> None:
    rows = [(-5, 2_000_000_000, 1.0, 0), (3, -1, 2.0, 1), (-5, -1, 3.0, 2)]
    encoded, maps = encode_ids(ratings_table(rows))
    assert maps.users[schema.USER_ID].to_pylist() == [-5, 3]
    assert maps.items[schema.ITEM_ID].to_pylist() == [-1, 2_000_000_000]
    assert encoded[schema.ITEM_IDX].to_pylist() == [1, 0, 0]


def test_titles_joined_from_movies() -> None:
    _, maps = encode_ids(ratings_table(ROWS), MOVIES)
    assert maps.items[schema.TITLE].to_pylist() == [None, "Thirty", "Seven Hundred"]


def test_both_directions_round_trip() -> None:
    _, maps = encode_ids(ratings_table(ROWS))
    ids = np.array([99, 7, 42, 7])
    idx = maps.to_user_idx(ids)
    assert idx.tolist() == [2, 0, 1, 0] and idx.dtype == np.int32
    assert maps.to_user_ids(idx).tolist() == ids.tolist()
    assert maps.to_item_ids(maps.to_item_idx(np.array([700, 5]))).tolist() == [700, 5]
    assert [maps.has_user(u) for u in (7, 42, 99, 8, 2**40)] == [True, True, True, False, False]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.to_user_idx(np.array([7, 8, 1000])),
         r"unknown user_id \[8, 1000\]: not in the id map"),
        (lambda m: m.to_user_idx(np.arange(100, 108)),
         r"unknown user_id \[100, 101, 102, 103, 104\] and 3 more: not in the id map"),
        (lambda m: m.to_item_idx(np.array([6])), r"item_id.*\[6\]"),
        (lambda m: m.to_user_ids(np.array([0, 3])), r"user_idx.*\[3\]"),
        (lambda m: m.to_item_ids(np.array([-1, 1])), r"item_idx.*\[-1\]"),
    ],
)
def test_unknown_values_raise_naming_them(call, match: str) -> None:
    _, maps = encode_ids(ratings_table(ROWS))
    with pytest.raises(ValueError, match=match):
        call(maps)


def test_apply_id_maps_matches_encode_and_rejects_unknown() -> None:
    table = ratings_table(ROWS)
    encoded, maps = encode_ids(table)
    assert apply_id_maps(table, maps).equals(encoded)
    with pytest.raises(ValueError, match=r"item_id.*\[31\]"):
        apply_id_maps(ratings_table([(7, 31, 1.0, 0)]), maps)


def test_save_load_round_trip(tmp_path: Path) -> None:
    _, maps = encode_ids(ratings_table(ROWS), MOVIES)
    user_path, item_path = save_id_maps(maps, tmp_path / "maps")
    assert user_path.name == USER_MAP_FILE and item_path.name == ITEM_MAP_FILE
    loaded = load_id_maps(tmp_path / "maps")
    assert loaded.users.equals(maps.users) and loaded.items.equals(maps.items)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [ITEM_MAP_FILE, USER_MAP_FILE]


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=USER_MAP_FILE):
        load_id_maps(tmp_path)


def test_load_rejects_non_contiguous_index(tmp_path: Path) -> None:
    _, maps = encode_ids(ratings_table(ROWS))
    save_id_maps(maps, tmp_path)
    bad = maps.users.set_column(0, schema.USER_IDX, pa.array([0, 2, 1], pa.int32()))
    pq.write_table(bad, tmp_path / USER_MAP_FILE)
    with pytest.raises(ValueError, match=rf"{USER_MAP_FILE}.*user_idx"):
        load_id_maps(tmp_path)


def test_find_positions_in_sorted_and_unsorted_ids() -> None:
    ids = np.array([7, 3, 99, 5, 4])
    for known in (np.array([3, 5, 7, 42]), np.array([42, 7, 3, 5])):
        pos = find_positions(known, ids)
        assert pos.dtype == np.int64
        expected = [list(known).index(i) if i in known else -1 for i in ids.tolist()]
        assert pos.tolist() == expected
    assert find_positions(np.array([], dtype=np.int64), ids).tolist() == [-1] * 5
