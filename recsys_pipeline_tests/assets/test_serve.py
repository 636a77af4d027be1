"""``serve/user_recommendations`` after a full pipeline run on the tiny release."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.assets.serve import serve_assets, user_recommendations
from recsys_pipeline.cli import main
from recsys_pipeline.data.lake import read_parquet
from recsys_pipeline.data.lakedb import DB_FILE_NAME
from recsys_pipeline.mlflow_resource import MlflowResource
from recsys_pipeline.model_io import build_train_resources
from recsys_pipeline.resources import LakeResource, build_resources
from recsys_pipeline.serving import lake_models as lm
from recsys_pipeline.serving.tables import USER_TOP_K_SCHEMA
from recsys_pipeline_tests.pipeline_lake import build_pipeline_lake

KEY = dg.AssetKey(["serve", "user_recommendations"])
OP = "serve__user_recommendations"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dg.ExecuteInProcessResult]:
    lake = tmp_path_factory.mktemp("serve") / "lake"
    result = build_pipeline_lake(lake, serve_assets, {OP: {"config": {"k": 3}}})
    return lake, result


def test_user_recommendations_in_the_full_pipeline(built):
    lake, result = built
    table = read_parquet(lake / "serve" / "user_recommendations.parquet")
    assert table.schema.equals(USER_TOP_K_SCHEMA)
    assert table.num_rows == 30 * 3  # 30 users, each with more than 3 unrated items
    assert table.column(S.USER_ID).to_pylist() == np.repeat(np.arange(1, 31), 3).tolist()
    assert table.column("rank").to_pylist() == [1, 2, 3] * 30
    scores = table.column("score").to_numpy().reshape(30, 3)
    assert (np.diff(scores, axis=1) <= 0).all()  # best first
    champion = lm.champion_model_name(lake)  # by ranking quality, as `recommend` picks
    assert champion is not None
    served, expected = lm.lake_top_k(lake, None, 3)
    assert served.name == champion and served.source.startswith("mlflow run")
    assert table.equals(expected)
    train = lm.load_split(lake, "train")
    pairs = set(zip(train.column(S.USER_ID).to_pylist(), train.column(S.ITEM_ID).to_pylist(),
                    strict=True))
    recs = zip(table.column(S.USER_ID).to_pylist(), table.column(S.ITEM_ID).to_pylist(),
               strict=True)
    assert not pairs & set(recs)
    meta = result.asset_materializations_for_node(OP)[0].metadata
    assert meta["model"].value == champion and meta["dagster/row_count"].value == 90
    assert meta["model_source"].value == served.source and meta["folded_in_users"].value == 0
    assert meta["chosen"].value.startswith("the champion with the best validation NDCG@10")
    with duckdb.connect(str(lake / DB_FILE_NAME), read_only=True) as conn:
        count = conn.execute("select count(*) from serve_user_recommendations").fetchall()[0][0]
    assert count == 90


def test_user_recommendations_config_picks_the_model(built, monkeypatch):
    lake, _ = built
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resources = {**build_resources(str(lake)), **build_train_resources(str(lake))}
    result = dg.materialize([user_recommendations], resources=resources,
                            run_config=dg.RunConfig({OP: {"config": {"model": "bias", "k": 2}}}),
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    table = read_parquet(lake / "serve" / "user_recommendations.parquet")
    _, expected = lm.lake_top_k(lake, "bias_model", 2)
    assert table.num_rows == 60 and table.equals(expected)
    assert pc.all(pc.greater_equal(table.column("rank"), 1)).as_py()
    assert result.output_for_node(OP).num_rows == 60


def test_user_recommendations_without_champions_serve_mf(built, tmp_path, monkeypatch):
    lake, _ = built
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resources = {**build_resources(str(lake)), **build_train_resources(str(lake))}
    resources["mlflow"] = MlflowResource(lake=LakeResource(root=str(lake)),
                                         tracking_uri=f"sqlite:///{tmp_path / 'none.db'}")
    result = dg.materialize([user_recommendations], resources=resources,
                            run_config=dg.RunConfig({OP: {"config": {"k": 2}}}),
                            instance=dg.DagsterInstance.ephemeral())
    meta = result.asset_materializations_for_node(OP)[0].metadata
    assert meta["model"].value == "mf_model" and "no champion" in meta["chosen"].value
    _, expected = lm.lake_top_k(lake, "mf_model", 2)
    assert read_parquet(lake / "serve" / "user_recommendations.parquet").equals(expected)


def test_user_recommendations_definition():
    spec = user_recommendations.specs_by_key[KEY]
    assert spec.group_name == "serve" and spec.description
    deps = {d.asset_key for d in spec.deps}
    assert dg.AssetKey(["models", "mf_model"]) in deps
    assert dg.AssetKey(["clean", "ratings"]) in deps  # every rating is excluded


def _add_lake_user(lake: Path, user_id: int, n: int) -> list[int]:
    """Give the lake's current data one more user with ``n`` ratings (clean/ratings and the
    prepared user map), as a retrain after `new-user --persist` would; the champions in
    MLflow stay the ones trained without them. Returns the movies they rated."""
    maps = lm.load_maps(lake)
    rated = maps.items.column(S.ITEM_ID).to_pylist()[:n]
    ratings = read_parquet(lake / "clean" / "ratings.parquet")
    extra = pa.table({S.USER_ID: [user_id] * n, S.ITEM_ID: rated,
                      S.RATING: [5.0, 4.0] * (n // 2) + [5.0] * (n % 2),
                      S.TIMESTAMP: [1_600_000_000 + i for i in range(n)]}).cast(ratings.schema)
    pq.write_table(pa.concat_tables([ratings, extra]), lake / "clean" / "ratings.parquet")
    users = maps.users
    row = pa.table({S.USER_IDX: [users.num_rows], S.USER_ID: [user_id]}).cast(users.schema)
    pq.write_table(pa.concat_tables([users, row]), lake / "prepared" / "user_map.parquet")
    return rated


def test_a_user_the_champion_does_not_know_is_folded_in_from_the_lake(built, tmp_path,
                                                                       capsys):
    # a retrain after `new-user --persist` whose challenger the champion gate kept out: the
    # lake knows user 31, the serving champion does not; both the serve table and
    # `recommend` fold them in from their lake ratings instead of leaving them out
    lake = tmp_path / "lake"
    shutil.copytree(built[0], lake)
    rated = _add_lake_user(lake, 31, 8)
    other = _add_lake_user(lake, 33, 5)
    served, table = lm.lake_top_k(lake, None, 3)
    assert served.maps.n_users == 30
    assert lm.users_unknown_to(served, lm.load_maps(lake)).tolist() == [31, 33]
    theirs33 = table.filter(pc.equal(table.column(S.USER_ID), 33))
    assert theirs33.column(S.ITEM_ID).to_pylist() == lm.fold_in_lake_users(
        lake, served, np.asarray([33]))[33].recommend(served.maps, lm.load_movies(lake), 3
                                                     ).column(S.ITEM_ID).to_pylist()
    assert not set(theirs33.column(S.ITEM_ID).to_pylist()) & set(other)
    theirs = table.filter(pc.equal(table.column(S.USER_ID), 31))
    assert theirs.column("rank").to_pylist() == [1, 2, 3]
    assert not set(theirs.column(S.ITEM_ID).to_pylist()) & set(rated)
    folded = lm.fold_in_lake_users(lake, served, np.asarray([31]))[31]
    movies = lm.load_movies(lake)
    assert theirs.column(S.ITEM_ID).to_pylist() == \
        folded.recommend(served.maps, movies, 3).column(S.ITEM_ID).to_pylist()
    assert table.filter(pc.less_equal(table.column(S.USER_ID), 30)).equals(
        lm.lake_top_k(built[0], None, 3)[1])  # everyone else as before

    assert main(["--lake", str(lake), "recommend", "--user", "31", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "user 31 is not one of the 30 users" in out and "folded in from their 8 ratings" in out
    for item in theirs.column(S.ITEM_ID).to_pylist():
        assert f" {item} " in out or f"\t{item}\t" in out or f" {item}\n" in out
    assert main(["--lake", str(lake), "recommend", "--user", "32", "-k", "3"]) == 2
    assert "unknown user_id 32" in capsys.readouterr().err
    # by embedding: no embedding to fold in, but the error says what serves them
    assert main(["--lake", str(lake), "recommend", "--user", "31", "--by-embedding"]) == 2
    err = capsys.readouterr().err
    assert "user_id 31 is not one of the 30 users" in err
    assert "`recommend --user 31` without --by-embedding folds them in" in err


def _add_split_rows(lake: Path, split: str, rows: list[dict]) -> None:
    path = lake / "prepared" / "splits" / f"{split}.parquet"
    table = read_parquet(path)
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist(rows, schema=table.schema)]),
                   path)


def test_check_user_after_a_retrain_the_champion_gate_kept_out(built, tmp_path, capsys):
    # the split now holds user 31, whom the rating champion was not trained on: every user's
    # check still works (31's rows left out of the model's figures), and 31 is folded in from
    # their train-split rows (copied from user 1's), never from the test rows being checked
    lake = tmp_path / "lake"
    shutil.copytree(built[0], lake)
    train = read_parquet(lake / "prepared" / "splits" / "train.parquet")
    ones = train.filter(pc.equal(train.column(S.USER_ID), 1)).to_pylist()
    _add_split_rows(lake, "train", [{**r, S.USER_ID: 31} for r in ones])
    test = read_parquet(lake / "prepared" / "splits" / "test.parquet")
    one_test = test.filter(pc.equal(test.column(S.USER_ID), 1)).to_pylist()
    _add_split_rows(lake, "test", [{**r, S.USER_ID: 31} for r in one_test])

    assert main(["--lake", str(lake), "check-user", "--user", "1", "-p", "3"]) == 0
    out = capsys.readouterr().out
    assert f"({test.num_rows} test ratings; {len(one_test)} more of users or movies it was " \
           "not trained on left out)" in out
    assert main(["--lake", str(lake), "check-user", "--user", "31", "-p", "3"]) == 0
    out31 = capsys.readouterr().out
    assert f"folded in from their {len(ones)} train-split ratings" in out31
    assert f"user 31: {min(3, len(one_test))} random of {len(one_test)} test ratings" in out31
    lines = [ln for ln in out31.splitlines() if ln.startswith("user  RMSE")]
    assert lines and "nan" not in lines[0]
