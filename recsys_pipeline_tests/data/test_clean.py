"""Cleaning rules on hand-built tables with hand-worked answers."""

import datetime as dt

import pyarrow as pa
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.data.clean import clean_table

UTC = dt.UTC


def ratings(rows):
    cols = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    return pa.table(
        {
            S.USER_ID: pa.array(cols[0], S.ID_TYPE),
            S.ITEM_ID: pa.array(cols[1], S.ID_TYPE),
            S.RATING: pa.array(cols[2], S.RATING_TYPE),
            S.TIMESTAMP: pa.array(
                [None if t is None else dt.datetime.fromtimestamp(t, UTC) for t in cols[3]],
                S.TIMESTAMP_TYPE,
            ),
        }
    )


def test_clean_ratings_drops_each_kind_and_reports_it():
    table = ratings([
        (1, 10, 4.0, 100),   # kept
        (1, 10, 4.0, 100),   # exact duplicate of row 0 -> dropped
        (1, 11, 3.0, 100),   # superseded by row 3 (older)
        (1, 11, 5.0, 200),   # latest for (1, 11) -> kept
        (2, 10, 2.0, 300),   # tie on timestamp with row 5 -> the later row wins
        (2, 10, 1.0, 300),   # kept
        (None, 12, 3.0, 1),  # null user -> dropped
        (3, 12, None, 1),    # null rating -> dropped
        (3, 13, 2.5, 50),    # kept
    ])
    clean, report = clean_table("ratings", table)
    assert clean.to_pydict()[S.USER_ID] == [1, 1, 2, 3]
    assert clean.to_pydict()[S.ITEM_ID] == [10, 11, 10, 13]
    assert clean.to_pydict()[S.RATING] == [4.0, 5.0, 1.0, 2.5]
    assert report.dropped == {
        "null_user_id": 1, "null_rating": 1, "exact_duplicate": 1, "superseded_rating": 2,
    }
    assert (report.rows_in, report.rows_out) == (9, 4)
    assert clean.schema == table.schema


def test_clean_ratings_keeps_clean_input_untouched_and_in_order():
    table = ratings([(3, 1, 1.0, 5), (1, 2, 2.0, 4), (2, 3, 3.0, 3)])
    clean, report = clean_table("ratings", table)
    assert clean.equals(table)
    assert report.dropped == {}


def test_nan_rating_counts_as_null():
    table = ratings([(1, 1, float("nan"), 5), (1, 2, 2.0, 4)])
    clean, report = clean_table("ratings", table)
    assert clean.num_rows == 1 and report.dropped == {"null_rating": 1}


def test_movies_keep_first_row_per_id_and_compare_genre_lists():
    movies = pa.table({
        S.ITEM_ID: pa.array([1, 2, 1, 2, 3], S.ID_TYPE),
        S.TITLE: ["A (1995)", "B", "A again", "B", "C"],
        S.YEAR: pa.array([1995, None, None, None, None], pa.int16()),
        S.GENRES: [["Drama"], ["Comedy"], ["Drama"], ["Comedy"], []],
    })
    clean, report = clean_table("movies", movies)
    assert clean[S.TITLE].to_pylist() == ["A (1995)", "B", "C"]
    assert report.dropped == {"exact_duplicate": 1, "duplicate_item_id": 1}


def test_tags_allow_many_per_pair_but_drop_exact_duplicates():
    ts = dt.datetime(2000, 1, 1, tzinfo=UTC)
    tags = pa.table({
        S.USER_ID: pa.array([1, 1, 1], S.ID_TYPE),
        S.ITEM_ID: pa.array([5, 5, 5], S.ID_TYPE),
        S.TAG: ["funny", "dark", "funny"],
        S.TIMESTAMP: pa.array([ts, ts, ts], S.TIMESTAMP_TYPE),
    })
    clean, report = clean_table("tags", tags)
    assert clean[S.TAG].to_pylist() == ["funny", "dark"]
    assert report.dropped == {"exact_duplicate": 1}


def test_unknown_table_is_an_error():
    with pytest.raises(ValueError, match="unknown table 'ratingz'"):
        clean_table("ratingz", ratings([]))
