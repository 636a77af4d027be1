"""``models/autoencoder_rating_model`` in a lake built by the whole pipeline: its MLflow run
(params, per-epoch valid RMSE, test RMSE / MAE), its leaderboard row, and the serving paths
(lake folder, ``--run-id``, the best-RMSE champion, check-user, new-user) on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from recsys_pipeline.cli import main
from recsys_pipeline.data.lake import read_parquet
from recsys_pipeline.models.autoencoder_rating import AutoEncoderRatingModel
from recsys_pipeline.models.base import load_model
from recsys_pipeline.serving import lake_models as lm
from recsys_pipeline_tests.pipeline_lake import build_pipeline_lake

ASSET = "autoencoder_rating_model"
NODE = f"models__{ASSET}"
CONFIG = {"hidden": [16], "dropout": 0.2, "epochs": 4, "batch_size": 8, "lr": 1e-2}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("ae_rating") / "lake"
    result = build_pipeline_lake(root, run_config={NODE: {"config": CONFIG}})
    return root, result


def _run(lake: Path):
    uri = lm.default_tracking_uri(lake)
    client = MlflowClient(uri, uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("recsys-pipeline").experiment_id],
        filter_string=f"tags.`dagster.asset_key` = 'models/{ASSET}'")
    return client, run


def test_asset_trains_logs_and_joins_the_leaderboard(built) -> None:
    lake, result = built
    checks = {(e.asset_key.path[-1], e.check_name): e.passed
              for e in result.get_asset_check_evaluations()}
    assert checks[(ASSET, "no_nan_weights")]
    model = load_model(lake / "models" / ASSET)
    n_users = read_parquet(lake / "prepared" / "user_map.parquet").num_rows
    train = read_parquet(lake / "prepared" / "splits" / "train.parquet")
    assert isinstance(model, AutoEncoderRatingModel) and model.n_users == n_users
    assert int(model.history().indptr[-1]) == train.num_rows  # the whole train matrix

    client, run = _run(lake)
    meta = result.asset_materializations_for_node(NODE)[0].metadata
    assert meta["mlflow_run_id"].value == run.info.run_id
    params, metrics = run.data.params, run.data.metrics
    assert params["model.hidden"] == "[16]" and params["model.unobserved_weight"] == "0.0"
    assert params["model.clamp"] == "True" and params["train.epochs"] == "4"
    assert params["data.split.method"] == "user_temporal"
    assert run.data.tags["model.family"] == "autoencoder_rating"
    curve = client.get_metric_history(run.info.run_id, "valid_rmse")
    assert [m.step for m in curve] == list(range(1, meta["epochs_run"].value + 1))
    assert metrics["best_valid_rmse"] == pytest.approx(min(m.value for m in curve))
    assert {"test_rmse", "test_mae", "test_fcp", "test_ndcg_at_10"} <= set(metrics)
    assert meta["test_rmse"].value == pytest.approx(metrics["test_rmse"], abs=1e-4)
    assert meta["champion"].value is True and meta["registered_version"].value == "1"
    assert "data:image/png;base64," in meta["learning_curve"].value
    # its own registered model, apart from the ranking autoencoder's recsys-autoencoder
    version = client.get_model_version_by_alias("recsys-autoencoder_rating", "champion")
    assert version.run_id == run.info.run_id
    ranking = client.get_model_version_by_alias("recsys-autoencoder", "champion")
    assert ranking.run_id != run.info.run_id

    board = read_parquet(lake / "reports" / "model_comparison.parquet")
    row = board.filter(board.column("model").to_numpy(zero_copy_only=False) == ASSET)
    assert row.num_rows == 1 and row.column("family").to_pylist() == ["autoencoder_rating"]
    assert row.column("test_rmse").to_pylist()[0] == pytest.approx(metrics["test_rmse"])
    assert row.column("test_mae").to_pylist()[0] == pytest.approx(metrics["test_mae"])


def test_serving_paths_take_the_rating_autoencoder(built, capsys) -> None:
    lake, _ = built
    served = lm.resolve_model(lake, "autoencoder_rating")
    assert isinstance(served.model, AutoEncoderRatingModel)
    _, run = _run(lake)
    name, model = lm.load_run_model(lake, run.info.run_id)  # --run-id: its model folder
    assert name == ASSET
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, served.model.state_dict()[key], rtol=0, atol=0)
    # the best-RMSE champion lookup reads its run like the others'
    assert lm.champion_model_name(lake, by="rmse") is not None
    for args in (("check-user", "--user", "2", "-p", "3", "--model", "autoencoder_rating"),
                 ("recommend", "--user", "1", "-k", "3", "--run-id", run.info.run_id)):
        assert main(["--lake", str(lake), *args]) == 0, capsys.readouterr().err
    csv = lake.parent / "me.csv"
    csv.write_text("movieId,rating\n" + "".join(f"{i},{4.5 if i < 11 else 1.0}\n"
                                                  for i in range(1, 21)))
    assert main(["--lake", str(lake), "new-user", "--ratings", str(csv), "-k", "3",
                 "--model", "autoencoder_rating"]) == 0
    assert "fit by encoder" in capsys.readouterr().out
    out = lake.parent / "ae_export"  # ONNX: the row scorer, over rating rows
    assert main(["--lake", str(lake), "export", "--model", "autoencoder_rating",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    assert "one user's ratings per row (0 = not rated)" in (out / "README.txt").read_text()


def test_config_converts_to_the_masked_clamped_core_config() -> None:
    from recsys_pipeline.assets.train import AutoEncoderRatingModelConfig
    from recsys_pipeline.models.autoencoder_rating import AutoEncoderRatingConfig

    core = AutoEncoderRatingModelConfig(hidden=[32, 8], constrained=True, seed=4).to_core()
    assert isinstance(core, AutoEncoderRatingConfig) and core.hidden == (32, 8)
    assert core.unobserved_weight == 0.0 and core.clamp and core.constrained
    assert core.activation == "selu" and core.seed == 4
    loop = AutoEncoderRatingModelConfig(epochs=3).loop("cpu")
    assert (loop.epochs, loop.batch_size, loop.device) == (3, 32, "cpu")
    with pytest.raises(ValueError, match="activation='gelu'"):
        AutoEncoderRatingModelConfig(activation="gelu").to_core()
