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


@pytest.mark.parametrize(("value", "text"), [
    (353083.0, "353083"), (1234567.5, "1234567.5"), (3.299999952316284, "3.3"),
    (4.54321, "4.5432"), (-2.5, "-2.5"), (0.000123456, "0.0001235"), (0.0, "0"),
    (float("nan"), "nan"), (1e20, "100000000000000000000")])
def test_numbers_keep_every_integer_digit(value, text):
    assert cli.format_number(value) == text  # was 3.531e+05 and 1234568


def test_query_csv_and_json_lines_at_full_precision(small_lake, capsys):
    sql = ("SELECT item_id, sum(rating) * 1000.5 AS s, list(user_id ORDER BY user_id) AS u, "
           "min(timestamp) AS t FROM clean_ratings GROUP BY 1 ORDER BY 1")
    assert cli.main(["--lake", str(small_lake), "query", sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "item_id,s,u,t", "10,12006.0,1|2|3,2001-09-09T01:46:40+00:00",
        "11,2001.0,1,2001-09-09T01:46:40+00:00"]
    assert cli.main(["--lake", str(small_lake), "query", sql, "--format", "json",
                     "--max-rows", "1"]) == 0
    import json

    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"item_id": 10, "s": 12006.0, "u": [1, 2, 3], "t": "2001-09-09T01:46:40+00:00"}]
    many = "SELECT range AS i, 'nan'::DOUBLE AS x, 1.25::DECIMAL(4, 2) AS d FROM range(60)"
    assert cli.main(["--lake", str(small_lake), "query", many, "--format", "json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 60 and rows[0] == {"i": 0, "x": None, "d": 1.25}  # all rows, strict
    assert cli.main(["--lake", str(small_lake), "query", many, "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 61  # not the table's 50
    assert cli.main(["--lake", str(small_lake), "query", many]) == 0
    assert "(60 rows (showing 50))" in capsys.readouterr().out


def test_float32_values_come_out_as_written(small_lake, capsys):
    # DuckDB widens a 4-byte FLOAT to double (0.1f -> 0.10000000149011612); the lake's ratings
    # and model scores are float32, so every format shows them at float32's shortest repr
    sql = ("SELECT 0.1::FLOAT AS f, 3.7::FLOAT AS r, NULL::FLOAT AS z, 0.1::DOUBLE AS d, "
           "'nan'::FLOAT AS n")
    assert cli.main(["--lake", str(small_lake), "query", sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["f,r,z,d,n", "0.1,3.7,,0.1,nan"]
    assert cli.main(["--lake", str(small_lake), "query", sql, "--format", "json"]) == 0
    assert capsys.readouterr().out.strip() == \
        '{"f": 0.1, "r": 3.7, "z": null, "d": 0.1, "n": null}'


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


def test_a_copied_lake_does_not_answer_from_the_original(small_lake, tmp_path_factory,
                                                         capsys):
    import shutil

    copy = tmp_path_factory.mktemp("copy") / "lake"
    shutil.copytree(small_lake, copy)
    code = cli.main(["--lake", str(copy), "query", "SELECT count(*) FROM clean_ratings"])
    assert code == 2 and "outside this lake" in capsys.readouterr().err  # not 4 rows of the
    assert cli.main(["--lake", str(copy), "views"]) == 0                 # original's
    assert cli.main(["--lake", str(copy), "query", "SELECT count(*) AS n FROM clean_ratings"]) \
        == 0


def test_a_moved_lake_says_to_recreate_the_views(small_lake, tmp_path_factory, capsys):
    import shutil

    moved = tmp_path_factory.mktemp("moved") / "lake"
    shutil.move(str(small_lake), moved)
    code = cli.main(["--lake", str(moved), "query", "SELECT count(*) FROM clean_ratings"])
    err = capsys.readouterr().err
    assert code == 2 and "reads" in err and "outside this lake (was it copied or moved?)" in err
    assert f"recsys-pipeline --lake {moved} views" in err
    assert cli.main(["--lake", str(moved), "views"]) == 0
    assert cli.main(["--lake", str(moved), "query", "SELECT count(*) AS n FROM clean_ratings"]) \
        == 0
    assert capsys.readouterr().out.splitlines()[-2].split() == ["4"]
