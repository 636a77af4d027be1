"""Prepare assets and split checks, materialized in process on a tmp lake."""

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.assets.ingest import ingest_assets
from recsys_pipeline.assets.prepare import SPLIT_TABLES, prepare_assets, split_key
from recsys_pipeline.checks import prepare_checks, split_checks
from recsys_pipeline.data.lake import read_json, read_parquet
from recsys_pipeline.data.sparse import load_matrices
from recsys_pipeline.data.store import load_sessions

ALL = [*ingest_assets, *prepare_assets, *prepare_checks]


def _run(resources, release, **op_config):
    config = {"raw__movielens_release": {"config": {"path": str(release)}}}
    config.update({k: {"config": v} for k, v in op_config.items()})
    return dg.materialize(ALL, resources=resources, run_config=dg.RunConfig(config))


@pytest.mark.parametrize("split", [
    {"method": "random", "ratios": [0.8, 0.1, 0.1]},
    {"method": "user_temporal", "leave_last_k": 2},
    {"method": "global_temporal", "ratios": [0.7, 0.15, 0.15]},
    {"method": "strong_generalization", "n_valid_users": 4, "n_test_users": 4},
])
def test_prepare_chain_every_split_method(tmp_lake, lake_resources, tiny_release, split):
    result = _run(lake_resources, tiny_release, rating_splits=split)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"splits_disjoint": True, "splits_complete": True,
                      "no_split_leakage": True, "held_out_users_unseen": True}
    prepared = tmp_lake / "prepared"
    encoded = read_parquet(prepared / "encoded_ratings.parquet")
    assert encoded.num_rows == 30 * 25
    tables = {n: read_parquet(prepared / "splits" / f"{n}.parquet") for n in SPLIT_TABLES}
    assert sum(t.num_rows for t in tables.values()) == encoded.num_rows
    report = read_json(prepared / "splits" / "report.json")
    assert report["config"]["method"] == split["method"]
    assert report["filter"] == read_json(prepared / "filter_report.json")["config"]
    assert report["filter"]["min_user_ratings"] == 0  # the filters' defaults, carried along
    if split["method"] == "strong_generalization":
        held_out = set(tables["valid"][S.USER_IDX].to_pylist())
        assert len(held_out) == 4 and not held_out & set(tables["train"][S.USER_IDX].to_pylist())
        assert tables["valid_fold_in"].num_rows > 0

    matrices = load_matrices(prepared / "user_item_matrix")
    n_users = read_parquet(prepared / "user_map.parquet").num_rows
    n_items = read_parquet(prepared / "item_map.parquet").num_rows
    assert matrices.explicit["train"].shape == (n_users, n_items)
    assert matrices.explicit["train"].nnz == tables["train"].num_rows
    sessions = load_sessions(prepared / "session_sequences")
    assert sessions.train.tokens.dtype == np.int32
    assert sessions.train.lengths.sum() == tables["train"].num_rows  # min_item_count 1
    with duckdb.connect(str(tmp_lake / "lake.duckdb"), read_only=True) as conn:
        views = {r[0] for r in conn.execute("SELECT view_name FROM duckdb_views() "
                                            "WHERE NOT internal").fetchall()}
    assert {"prepared_splits_train", "prepared_item_map",
            "prepared_session_sequences_train"} <= views


def test_course_filter_through_config(lake_resources, embedded_release):
    result = dg.materialize(
        [*ingest_assets, prepare_assets[0]], resources=lake_resources,
        selection=dg.AssetSelection.keys(["raw", "movielens_release"], ["clean", "ratings"],
                                         ["prepared", "filtered_ratings"],
                                         ["prepared", "filter_report"]),
        run_config=dg.RunConfig({
            "raw__movielens_release": {"config": {"path": str(embedded_release)}},
            "prepared__filtered_ratings": {"config": {"top_n_items": 200,
                                                      "min_user_ratings": 100}}}))
    meta = result.asset_materializations_for_node("prepared__filtered_ratings")[0].metadata
    assert (meta["dagster/row_count"].value, meta["distinct_users"].value,
            meta["distinct_items"].value) == (8_329, 63, 200)
    assert "top_n_items" in meta["filter_steps"].value
    filters = read_json(lake_resources["lake"].path("prepared", "filter_report.json"))
    assert filters["config"]["top_n_items"] == 200 and filters["steps"]


def _encoded(users, items, times):
    n = len(users)
    return pa.table({
        S.USER_IDX: pa.array(users, pa.int32()), S.ITEM_IDX: pa.array(items, pa.int32()),
        S.USER_ID: pa.array(users, pa.int32()), S.ITEM_ID: pa.array(items, pa.int32()),
        S.RATING: pa.array([4.0] * n, pa.float32()),
        S.TIMESTAMP: pa.array(times, pa.timestamp("s", tz="UTC")),
    })


def _constant(key: dg.AssetKey, value: object) -> dg.AssetsDefinition:
    @dg.asset(key=key)
    def _value():
        return value

    return _value


def _fake_split_assets(tables: dict[str, pa.Table], encoded: pa.Table, method: str):
    empty = encoded.schema.empty_table()
    report = {"config": {"method": method, "fold_in_by": "time"}, "report": {}}
    return [*(_constant(split_key(n), tables.get(n, empty)) for n in SPLIT_TABLES),
            _constant(split_key("report"), report),
            _constant(dg.AssetKey(["prepared", "encoded_ratings"]), encoded)]


def test_split_checks_fire_on_leaky_splits():
    encoded = _encoded([0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [10, 20, 30, 10, 20])
    leaky = {
        "train": encoded.slice(1, 4),  # user 0's later rows, and user 1
        "test": encoded.slice(0, 2),   # user 0's earliest row (precedes train) + a duplicate
    }
    result = dg.materialize(
        [*_fake_split_assets(leaky, encoded, "user_temporal"), split_checks],
        resources={"io_manager": dg.mem_io_manager}, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["splits_disjoint"].passed  # row 1 is in train and test
    assert not checks["no_split_leakage"].passed  # test row at t=10 before train t=20..30
    assert "problems" in checks["no_split_leakage"].metadata


def test_split_checks_fire_when_a_row_is_lost():
    encoded = _encoded([0, 0, 1], [0, 1, 0], [1, 2, 3])
    tables = {"train": encoded.slice(0, 1), "test": encoded.slice(2, 1)}  # row 1 lost
    result = dg.materialize(
        [*_fake_split_assets(tables, encoded, "random"), split_checks],
        resources={"io_manager": dg.mem_io_manager}, raise_on_error=False)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"splits_disjoint": True, "splits_complete": False,
                      "no_split_leakage": True, "held_out_users_unseen": True}


def test_split_checks_fire_when_held_out_user_is_in_train():
    encoded = _encoded([0, 0, 1, 1], [0, 1, 0, 1], [1, 2, 3, 4])
    # user 1 is held out (its last row is in valid) but its first row is in train
    tables = {"train": encoded.slice(0, 3), "valid": encoded.slice(3, 1)}
    result = dg.materialize(
        [*_fake_split_assets(tables, encoded, "strong_generalization"), split_checks],
        resources={"io_manager": dg.mem_io_manager}, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["held_out_users_unseen"].passed
