"""Train and evaluate assets materialized in process on a tiny prepared lake."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import torch

from recsys_pipeline.assets.evaluate import evaluate_assets, model_comparison
from recsys_pipeline.assets.ingest import ingest_assets
from recsys_pipeline.assets.prepare import prepare_assets
from recsys_pipeline.assets.train import (
    TRAIN_PRESETS,
    DeepFMModelConfig,
    MLPModelConfig,
    deepfm_model,
    mf_model,
    popularity_model,
    train_assets,
    train_checks,
)
from recsys_pipeline.data.lake import file_sha256, read_parquet
from recsys_pipeline.model_io import DeviceResource, build_train_resources
from recsys_pipeline.models.base import load_model
from recsys_pipeline.models.deepfm import DeepFMModel
from recsys_pipeline.models.mf import MFModel
from recsys_pipeline.resources import build_resources
from recsys_pipeline.tracking import TAG_DAGSTER_RUN, TAG_TRAIN_SHA

ALL = [*ingest_assets, *prepare_assets, *train_assets, *evaluate_assets, *train_checks]
SMALL = {"epochs": 2, "batch_size": 128}


def _materialize(lake: Path, assets: list[dg.AssetsDefinition], run_config: dict,
                 **overrides: object) -> dg.ExecuteInProcessResult:
    resources = {**build_resources(str(lake)), **build_train_resources(str(lake)), **overrides}
    selection = dg.AssetSelection.assets(*assets)
    return dg.materialize(ALL, selection=selection, resources=resources,
                          run_config=dg.RunConfig(run_config), raise_on_error=False)


def test_models_and_leaderboard_materialize(lake: Path) -> None:
    result = _materialize(lake, [mf_model, popularity_model, deepfm_model, model_comparison], {
        "models__mf_model": {"config": SMALL},
        "models__deepfm_model": {"config": {**SMALL, "embedding_dim": 4, "hidden": [8]}},
    })
    assert result.success
    checks = {(e.asset_key.path[-1], e.check_name): e.passed
              for e in result.get_asset_check_evaluations()}
    assert checks == {(m, "no_nan_weights"): True
                      for m in ("mf_model", "popularity_model", "deepfm_model")}

    n_users = read_parquet(lake / "prepared" / "user_map.parquet").num_rows
    model = load_model(lake / "models" / "mf_model")
    assert isinstance(model, MFModel) and model.n_users == n_users
    assert not list((lake / "models").glob(".*"))  # no temp folders left behind
    deepfm = load_model(lake / "models" / "deepfm_model")
    assert isinstance(deepfm, DeepFMModel) and deepfm.genres is not None
    assert deepfm.year_embedding is not None

    meta = result.asset_materializations_for_node("models__mf_model")[0].metadata
    run = build_train_resources(str(lake))["mlflow"].client().get_run(
        meta["mlflow_run_id"].value)
    train_sha = file_sha256(lake / "prepared" / "splits" / "train.parquet")
    assert run.data.tags[TAG_DAGSTER_RUN] == result.run_id
    assert run.data.tags[TAG_TRAIN_SHA] == train_sha == meta["train_sha256"].value
    assert run.data.params["data.split.method"] == "user_temporal"
    assert meta["epochs_run"].value == 2 and meta["champion"].value is True
    assert meta["champion_decision"].value == "promoted"
    assert meta["challenger_valid_sha256"].value == run.data.tags["data.valid_sha256"]
    assert meta["challenger_valid_rmse"].value == pytest.approx(
        run.data.metrics["best_valid_rmse"], abs=1e-5)
    assert run.data.tags["data.release"] == "ml-latest"  # the name the ingest recorded
    assert "data:image/png;base64," in meta["learning_curve"].value
    assert meta["test_rmse"].value == pytest.approx(run.data.metrics["test_rmse"], abs=1e-4)
    # the stored weights are the ones MLflow scored
    with torch.no_grad():
        scores = model.score_all(torch.arange(n_users))
    assert torch.isfinite(scores).all()

    board = read_parquet(lake / "reports" / "model_comparison.parquet")
    assert board.column("model").to_pylist()[-1] == "popularity_model"  # no RMSE: last
    rmse = board.column("test_rmse").to_pylist()
    assert rmse[:2] == sorted(rmse[:2]) and rmse[2] is None
    assert meta["mlflow_run_id"].value in board.column("run_id").to_pylist()
    board_meta = result.asset_materializations_for_node("reports__model_comparison")[0].metadata
    assert board_meta["dagster/row_count"].value == 3
    assert "| deepfm_model |" in board_meta["leaderboard"].value
    assert board_meta["mlflow_ui"].value.startswith("mlflow ui --backend-store-uri sqlite:///")


def test_evaluation_resource_ranks_a_sample_of_users(lake: Path) -> None:
    # max_ranked_users: the top-K metrics of every model of the run rank the same fixed
    # sample; RMSE still covers every held-out rating; the setting is logged with the run
    from recsys_pipeline.model_io import EvaluationResource

    result = _materialize(lake, [mf_model], {"models__mf_model": {"config": SMALL}},
                          evaluation=EvaluationResource(max_ranked_users=3))
    assert result.success
    tracker = build_train_resources(str(lake))["mlflow"]
    [run] = tracker.client().search_runs([tracker.experiment_id()], max_results=1,
                                         order_by=["attributes.start_time DESC"])
    metrics, params = run.data.metrics, run.data.params
    assert params["eval.max_users"] == "3"
    assert metrics["test_n_ranked_users"] == 3 and metrics["best_valid_n_ranked_users"] == 3
    test_rows = read_parquet(lake / "prepared" / "splits" / "test.parquet").num_rows
    assert metrics["test_n_ratings"] == test_rows  # rating metrics: every held-out rating
    bad = _materialize(lake, [mf_model], {"models__mf_model": {"config": SMALL}},
                       evaluation=EvaluationResource(max_ranked_users=-1))
    assert not bad.success


def test_device_resource_sets_torch_threads_for_the_run(lake: Path) -> None:
    # threads: 1 (a machine shared with other work) holds for the run's training steps
    seen: list[int] = []

    @dg.asset(deps=[mf_model])
    def probe(device: DeviceResource) -> None:
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = dg.materialize([probe], resources={"device": DeviceResource(threads=1)},
                                selection=dg.AssetSelection.assets(probe))
        assert result.success and seen == [1]
        torch.set_num_threads(2)
        assert dg.materialize([probe], resources={"device": DeviceResource()},
                              selection=dg.AssetSelection.assets(probe)).success
        assert seen == [1, 2]  # 0: torch's own setting stays
        bad = dg.materialize([probe], resources={"device": DeviceResource(threads=-1)},
                             selection=dg.AssetSelection.assets(probe), raise_on_error=False)
        assert not bad.success
    finally:
        torch.set_num_threads(before)


def test_failed_training_fails_the_asset_and_its_mlflow_run(lake: Path) -> None:
    result = _materialize(lake, [mf_model], {"models__mf_model": {"config": SMALL}},
                          device=DeviceResource(device="cuda:99"))
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "cuda:99" in str(failure.event_specific_data.error)
    tracker = build_train_resources(str(lake))["mlflow"]
    [run] = tracker.client().search_runs([tracker.experiment_id()])
    assert run.info.status == "FAILED" and run.data.tags[TAG_DAGSTER_RUN] == result.run_id
    assert not (lake / "models" / "mf_model").exists()


def test_a_run_that_died_resumes_from_its_checkpoint(lake: Path, monkeypatch) -> None:
    """checkpoint: true saves every epoch; a run killed after epoch 2 of 4, re-executed with
    the same config, resumes there and ends with the weights of an uninterrupted run."""
    from recsys_pipeline.training import loop as core_loop

    config = {"models__mf_model": {"config": {**SMALL, "epochs": 4, "patience": None,
                                               "checkpoint": True}}}
    assert _materialize(lake, [mf_model], config).success
    uninterrupted = load_model(lake / "models" / "mf_model").state_dict()
    assert not list((lake / "checkpoints").iterdir())  # removed once training ended

    real_save, saves = core_loop.save_checkpoint, []

    def save_then_die(path, state):
        real_save(path, state)
        saves.append(state["epoch"])
        if state["epoch"] == 2:
            raise RuntimeError("killed after epoch 2")

    monkeypatch.setattr(core_loop, "save_checkpoint", save_then_die)
    assert not _materialize(lake, [mf_model], config).success
    [left] = (lake / "checkpoints").iterdir()
    assert left.name.startswith("mf_model-") and saves == [1, 2]
    def save(path, state):
        real_save(path, state)
        saves.append(state["epoch"])

    monkeypatch.setattr(core_loop, "save_checkpoint", save)
    assert _materialize(lake, [mf_model], config).success
    assert saves == [1, 2, 3, 4]  # epochs 3 and 4 only: it resumed after epoch 2
    got = load_model(lake / "models" / "mf_model").state_dict()
    assert all(torch.equal(got[k], uninterrupted[k]) for k in uninterrupted)
    assert not (lake / "checkpoints" / left.name).exists()

    # killed again, then re-run with other settings: a fresh start (not "config differs"),
    # and the stale checkpoint is cleaned up with its own
    monkeypatch.setattr(core_loop, "save_checkpoint", save_then_die)
    assert not _materialize(lake, [mf_model], config).success
    other = {"models__mf_model": {"config": {**config["models__mf_model"]["config"],
                                             "batch_size": 64}}}
    monkeypatch.setattr(core_loop, "save_checkpoint", real_save)
    assert _materialize(lake, [mf_model], other).success
    assert not list((lake / "checkpoints").iterdir())


def test_leaderboard_without_runs_names_the_data(lake: Path) -> None:
    result = _materialize(lake, [model_comparison], {})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no FINISHED run" in str(failure.event_specific_data.error)


def test_configs_convert_to_core_and_assets_are_grouped() -> None:
    mlp = MLPModelConfig(hidden=[8, 4], embedding_dim=6, seed=5).to_core()
    assert mlp.hidden == (8, 4) and mlp.user_dim == mlp.item_dim == 6 and mlp.seed == 5
    assert DeepFMModelConfig().to_core().embedding_dim == 16
    loop = MLPModelConfig(epochs=3, patience=None).loop("cpu")
    assert (loop.epochs, loop.patience, loop.device) == (3, None, "cpu")
    for asset in train_assets:
        [key] = asset.keys
        assert key.path[0] == "models" and asset.group_names_by_key[key] == "train"
        assert asset.descriptions_by_key[key]
    assert len(train_checks) == len(train_assets) == 7
    assert model_comparison.group_names_by_key[model_comparison.key] == "evaluate"


def test_train_presets_are_valid_run_configs(tmp_lake: Path) -> None:
    job = dg.define_asset_job("train_job", selection=dg.AssetSelection.groups("train",
                                                                             "evaluate"))
    defs = dg.Definitions(assets=ALL[:-len(train_checks)], asset_checks=train_checks,
                          jobs=[job], resources={**build_resources(str(tmp_lake)),
                                                 **build_train_resources(str(tmp_lake))})
    for preset in TRAIN_PRESETS.values():
        dg.validate_run_config(defs.resolve_job_def("train_job"), preset)
    with pytest.raises(dg.DagsterInvalidConfigError, match="n_factor"):
        dg.validate_run_config(defs.resolve_job_def("train_job"),
                               {"ops": {"models__mf_model": {"config": {"n_factor": 3}}}})
