"""``serve/user_recommendations`` after a full pipeline run on the tiny release."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow.compute as pc
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.assets.serve import serve_assets, user_recommendations
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
    assert meta["model_source"].value == served.source
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
