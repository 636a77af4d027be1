"""The recsys-pipeline command: SQL and saved queries over a lake, errors as one line."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from recsys_pipeline import cli
from recsys_pipeline.data import lake, lakedb


@pytest.fixture
def small_lake(tmp_path):
    ratings = pa.table({"user_id": [1, 1, 2, 3], "item_id": [10, 11, 10, 10],
                        "rating": [4.0, 2.0, 5.0, 3.0],
                        "timestamp": pa.array([10**9] * 4, pa.timestamp("s", tz="UTC"))})
    movies = pa.table({"item_id": [10, 11], "title": ["Heat (1995)", "Up (2009)"],
                       "year": [1995, 2009], "genres": [["Crime"], ["Animation", "Comedy"]]})
    lake.write_parquet(ratings, tmp_path / "clean" / "ratings.parquet")
    lake.write_parquet(movies, tmp_path / "clean" / "movies.parquet")
    with duckdb.connect(str(tmp_path / lakedb.DB_FILE_NAME)) as conn:
        lakedb.refresh_views(conn, tmp_path)
    return tmp_path


def test_query_prints_a_table(small_lake, capsys):
    code = cli.main(["--lake", str(small_lake), "query",
                     "SELECT item_id, count(*) AS n FROM clean_ratings GROUP BY 1 ORDER BY 1"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split() == ["item_id", "n"]
    assert out[2].split() == ["10", "3"] and out[3].split() == ["11", "1"]
    assert out[-1] == "(2 rows)"


def test_negative_max_rows_is_refused(small_lake, capsys):
    code = cli.main(["--lake", str(small_lake), "query", "SELECT 1", "--max-rows", "-1"])
    assert code == 2 and "--max-rows -1 must be >= 0" in capsys.readouterr().err


def test_saved_query_with_param(small_lake, capsys):
    code = cli.main(["--lake", str(small_lake), "query", "--saved", "best_rated",
                     "--param", "min_ratings=2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Heat (1995)" in out and "Up (2009)" not in out and "(1 row)" in out


def test_list_saved_queries(capsys):
    assert cli.main(["query", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("rating_distribution", "most_rated", "best_rated", "genres",
                 "user_activity", "ratings_per_year"):
        assert name in out


def test_every_saved_query_runs(small_lake, capsys):
    for name in lakedb.saved_queries():
        assert cli.main(["--lake", str(small_lake), "query", "--saved", name]) == 0, name


def test_errors_are_one_line(small_lake, capsys):
    assert cli.main(["--lake", str(small_lake), "query", "SELECT * FROM nope"]) == 2
    assert "SQL error" in capsys.readouterr().err
    assert cli.main(["--lake", str(small_lake), "query", "DROP VIEW clean_ratings"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert cli.main(["--lake", str(small_lake / "missing"), "query", "SELECT 1"]) == 2
    assert "no lake database yet" in capsys.readouterr().err
