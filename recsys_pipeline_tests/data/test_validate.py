"""Validators: each passes on good data and names the column and values on bad data."""

import datetime as dt

import pyarrow as pa
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.data import validate as V

HALF_STARS = [x / 2 for x in range(1, 11)]


def ratings(users, items, values, years=None):
    n = len(users)
    years = years or [2000] * n
    return pa.table({
        S.USER_ID: pa.array(users, S.ID_TYPE),
        S.ITEM_ID: pa.array(items, S.ID_TYPE),
        S.RATING: pa.array(values, S.RATING_TYPE),
        S.TIMESTAMP: pa.array([dt.datetime(y, 6, 1, tzinfo=dt.UTC) for y in years],
                              S.TIMESTAMP_TYPE),
    })


GOOD = ratings([1, 1, 2], [10, 11, 10], [0.5, 5.0, 3.5])


def test_good_ratings_pass_every_validator():
    assert V.validate_ratings(GOOD, HALF_STARS) == []
    movies = pa.table({S.ITEM_ID: pa.array([10, 11], S.ID_TYPE)})
    assert V.check_items_in_movies(GOOD, movies) == []


def test_schema_names_missing_and_mistyped_columns():
    bad = GOOD.drop_columns([S.TIMESTAMP]).set_column(
        2, S.RATING, GOOD[S.RATING].cast(pa.float64()))
    [finding] = V.check_schema(bad, S.RATINGS_SCHEMA, "ratings")
    assert "missing ['timestamp']" in finding.message
    assert "rating: double (expected float)" in finding.message


def test_off_scale_ratings_are_counted_with_values():
    bad = ratings([1, 1, 2, 3], [1, 2, 3, 4], [7.0, 3.3, 4.0, 0.0])
    [finding] = V.check_rating_values(bad, HALF_STARS)
    assert finding.count == 3
    assert "column 'rating'" in finding.message and "7.0" in finding.message
    assert [e[S.ITEM_ID] for e in finding.examples] == [1, 2, 4]


def test_integer_scale_rejects_half_stars():
    [finding] = V.check_rating_values(GOOD, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert finding.count == 2  # 0.5 and 3.5


def test_null_ids_found_per_column():
    bad = GOOD.set_column(0, S.USER_ID, pa.array([1, None, None], S.ID_TYPE))
    [finding] = V.check_no_null_ids(bad)
    assert finding.count == 2 and "'user_id'" in finding.message


def test_duplicate_pairs_counted():
    bad = ratings([1, 1, 2, 1], [10, 10, 10, 11], [1.0, 2.0, 3.0, 4.0])
    [finding] = V.check_unique_pairs(bad)
    assert finding.count == 2 and finding.message.startswith("1 (user_id, item_id) pairs")


def test_duplicate_pairs_agree_with_pandas_on_random_ids():
    # the sort-based check against pandas' duplicated() on many small-range ids (so many
    # repeats, some three or more times) and on ids past 2^31 / negative-free int32 extremes
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    for users, items in [(rng.integers(0, 30, 2000), rng.integers(0, 40, 2000)),
                         (np.array([2**31 - 1, 2**31 - 1, 0, 0]), np.array([7, 7, 2**31 - 1, 5]))]:
        table = ratings(users.tolist(), items.tolist(), [3.0] * len(users))
        frame = pd.DataFrame({"u": users, "i": items})
        want = frame.duplicated(keep=False).to_numpy()
        got, n_pairs = V._duplicated(table, (S.USER_ID, S.ITEM_ID))
        assert (got == want).all() and n_pairs == frame[want].drop_duplicates().shape[0]
        # the generic path (any key) agrees too
        got3, n3 = V._duplicated(table, (S.USER_ID, S.ITEM_ID, S.RATING))
        assert (got3 == want).all() and n3 == n_pairs


@pytest.mark.parametrize("year", [1970, 2150])
def test_timestamps_out_of_range(year):
    bad = ratings([1, 2], [1, 1], [1.0, 1.0], years=[2001, year])
    [finding] = V.check_timestamps(bad)
    assert finding.count == 1 and "'timestamp'" in finding.message


def test_items_missing_from_movies_are_listed():
    movies = pa.table({S.ITEM_ID: pa.array([10], S.ID_TYPE)})
    [finding] = V.check_items_in_movies(GOOD, movies)
    assert finding.count == 1 and "[11]" in finding.message


def test_raise_findings_names_where():
    with pytest.raises(ValueError, match=r"^ratings.parquet: \[ratings_on_scale\]"):
        V.raise_findings(V.check_rating_values(ratings([1], [1], [9.0]), HALF_STARS),
                         "ratings.parquet")
