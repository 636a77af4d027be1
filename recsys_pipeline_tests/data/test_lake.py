"""Atomic lake writes, DuckDB views over the lake, saved queries."""

import duckdb
import pyarrow as pa
import pytest

from recsys_pipeline.data import lake, lakedb


def test_write_parquet_roundtrip_and_no_temp_left(tmp_path):
    table = pa.table({"a": [1, 2, 3]})
    path = lake.write_parquet(table, tmp_path / "clean" / "t.parquet")
    assert lake.read_parquet(path).equals(table)
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.parquet"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "t.json"
    lake.write_json({"v": 1}, target)

    def boom(tmp):
        tmp.write_text("half-writ")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        lake.write_atomic(target, boom)
    assert lake.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_missing_lake_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.parquet: no such lake file"):
        lake.read_parquet(tmp_path / "nope.parquet")


def test_file_sha256_known_value(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert lake.file_sha256(tmp_path / "f") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_refresh_views_tracks_lake_files(tmp_path):
    lake.write_parquet(pa.table({"x": [1, 2]}), tmp_path / "clean" / "ratings.parquet")
    lake.write_parquet(pa.table({"y": [3]}), tmp_path / "prepared" / "splits.parquet")
    for not_a_table in ("mlflow/artifacts/0a1b/artifacts/id_maps/items.parquet",
                        "exports/mf/item_map.parquet", ".cache/x.parquet"):
        lake.write_parquet(pa.table({"z": [1]}), tmp_path / not_a_table)
    with duckdb.connect(str(tmp_path / "lake.duckdb")) as conn:
        assert lakedb.refresh_views(conn, tmp_path) == ["clean_ratings", "prepared_splits"]
        assert conn.execute("SELECT sum(x) FROM clean_ratings").fetchone() == (3,)
        (tmp_path / "prepared" / "splits.parquet").unlink()
        assert lakedb.refresh_views(conn, tmp_path) == ["clean_ratings"]
        views = conn.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        assert views == [("clean_ratings",)]


def test_run_query_is_read_only(tmp_path):
    lake.write_parquet(pa.table({"x": [1, 2]}), tmp_path / "clean" / "t.parquet")
    db = tmp_path / "lake.duckdb"
    with duckdb.connect(str(db)) as conn:
        lakedb.refresh_views(conn, tmp_path)
    cols, rows = lakedb.run_query(db, "SELECT x * $k AS y FROM clean_t ORDER BY y", {"k": 10})
    assert cols == ["y"] and rows == [(10,), (20,)]
    with pytest.raises(duckdb.Error, match="read-only"):
        lakedb.run_query(db, "CREATE TABLE z AS SELECT 1")


def test_run_query_without_database_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="ingest_job"):
        lakedb.run_query(tmp_path / "lake.duckdb", "SELECT 1")


def test_saved_queries_are_all_described_and_bind_params():
    queries = lakedb.saved_queries()
    assert set(queries) >= {"rating_distribution", "most_rated", "best_rated", "genres",
                            "user_activity", "ratings_per_year"}
    assert all(q.description for q in queries.values())
    assert queries["best_rated"].bind({"min_ratings": "10"}) == {"min_ratings": 10, "limit": 20}
    with pytest.raises(ValueError, match="no parameter \\['bogus'\\]"):
        queries["best_rated"].bind({"bogus": "1"})
    with pytest.raises(ValueError, match="no saved query 'nope'; available: best_rated"):
        lakedb.get_saved_query("nope")


def test_parquet_roundtrip_keeps_seconds_timestamps_and_list_columns(tmp_path):
    table = pa.table({
        "timestamp": pa.array([0, 964982703], pa.timestamp("s", tz="UTC")),
        "genres": pa.array([["Drama"], []], pa.list_(pa.string())),
    })
    back = lake.read_parquet(lake.write_parquet(table, tmp_path / "t.parquet"))
    assert back.schema.field("timestamp").type == pa.timestamp("s", tz="UTC")
    assert back.equals(table)


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    path = lake.write_json({}, tmp_path / "x.json")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
