"""Item side features from hand-built movies and tags."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.data.item_features import item_side_features
from recsys_pipeline.training.experiment import ItemFeatures


def _item_map(ids: list[int]) -> pa.Table:
    return pa.table({S.ITEM_IDX: pa.array(range(len(ids)), pa.int32()),
                     S.ITEM_ID: pa.array(ids, pa.int32()),
                     S.TITLE: pa.array([None] * len(ids), pa.string())})


MOVIES = pa.table({
    S.ITEM_ID: pa.array([10, 20, 30, 99], pa.int32()),
    S.TITLE: ["a", "b", "c", "unrated"],
    S.YEAR: pa.array([1995, None, 2001, 1950], pa.int16()),
    S.GENRES: [["Drama", "Comedy"], [], ["Action"], ["Horror"]],
})
TAGS = pa.table({
    S.USER_ID: pa.array([1, 2, 3, 1, 2, 1], pa.int32()),
    S.ITEM_ID: pa.array([10, 20, 20, 30, 30, 77], pa.int32()),
    S.TAG: ["Funny", " funny", "FUNNY ", "dark", "funny", "funny"],
    S.TIMESTAMP: pa.array([0] * 6, pa.timestamp("s", tz="UTC")),
})


def test_genres_years_and_top_tags_follow_the_item_map() -> None:
    # item_idx 0 -> movie 30, 1 -> 10, 2 -> 40 (not in movies), 3 -> 20
    features = item_side_features(_item_map([30, 10, 40, 20]), MOVIES, TAGS, max_tags=1)
    assert features.genre_names == ["Action", "Comedy", "Drama"]  # Horror: unmapped movie
    np.testing.assert_array_equal(features.genres, [[1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(features.years, [2001, 1995, np.nan, np.nan])
    # "funny" is on items 10, 20, 30 (case/space folded; item 77 is unmapped), "dark" on one
    assert features.tag_names == ["funny"]
    np.testing.assert_array_equal(features.tags, [[1], [1], [0], [1]])
    as_tensors = ItemFeatures.from_arrays(features.genres, features.years, features.tags)
    # decade buckets from the earliest known year (1995): 2001 and 1995 share bucket 1
    assert as_tensors.year_bucket.tolist() == [1, 1, 0, 0] and as_tensors.n_year_buckets == 2
    assert as_tensors.genres.shape == (4, 3) and as_tensors.tags.shape == (4, 1)


def test_no_tags_unless_asked_and_map_order_checked() -> None:
    features = item_side_features(_item_map([10]), MOVIES, TAGS)
    assert features.tags is None
    bad = _item_map([10, 20]).set_column(0, S.ITEM_IDX, pa.array([1, 0], pa.int32()))
    with pytest.raises(ValueError, match="item_idx"):
        item_side_features(bad, MOVIES)
