"""MLflow tracking on a tmp SQLite store: one run per model, FAILED on error, champion alias."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
import torch

from recsys_pipeline.champion import gate
from recsys_pipeline.evaluation.selection import Contender
from recsys_pipeline.models.mf import MFConfig
from recsys_pipeline.models.popularity import PopularityConfig
from recsys_pipeline.tracking import (
    CHAMPION,
    TAG_DAGSTER_RUN,
    TAG_FAMILY,
    TAG_TRAIN_SHA,
    TAG_VALID_SHA,
    leaderboard_rows,
    train_and_track,
)
from recsys_pipeline.training.experiment import ExperimentData
from recsys_pipeline.training.loop import TrainConfig

TAGS = {TAG_DAGSTER_RUN: "dagster-run-1", TAG_FAMILY: "mf", TAG_TRAIN_SHA: "t" * 64,
        TAG_VALID_SHA: "v" * 64}


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, line: str) -> None:
        self.lines.append(line)


def _train(tracker, data: ExperimentData, config=None, loop=None, tags=TAGS, log=None):
    import pyarrow as pa

    return train_and_track(
        tracker, log or _Log(), name="mf_model", data=data,
        model_config=config or MFConfig(n_factors=4, l2=0.01, seed=3),
        train_config=loop or TrainConfig(epochs=4, batch_size=64, lr=0.03, device="cpu"),
        tags=tags, params={"data.split.method": "random"},
        id_maps={"user_map": pa.table({"user_idx": [0, 1], "user_id": [7, 9]})})


def test_one_run_holds_params_metrics_artifacts_and_a_loadable_model(
        tracker, planted_data: ExperimentData, mlflow_lake) -> None:
    log = _Log()
    tracked = _train(tracker, planted_data, log=log)
    client = tracker.client()
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "mf_model"
    params = run.data.params
    assert params["model.n_factors"] == "4" and params["train.lr"] == "0.03"
    assert params["data.n_users"] == "48" and params["data.split.method"] == "random"
    assert params["system.torch_version"] == torch.__version__
    assert params["system.cpu_count"] == str(os.cpu_count()) and params["system.device"] == "cpu"
    assert run.data.tags[TAG_DAGSTER_RUN] == "dagster-run-1"
    assert run.data.tags[TAG_TRAIN_SHA] == "t" * 64
    history = client.get_metric_history(tracked.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx(
        [h["train_loss"] for h in tracked.result.history])
    metrics = run.data.metrics
    assert metrics["test_rmse"] == pytest.approx(tracked.result.test["rmse"])
    assert metrics["test_ndcg_at_10"] == pytest.approx(tracked.result.test["ndcg@10"])
    assert metrics["best_valid_rmse"] == pytest.approx(tracked.result.valid["rmse"])
    assert len(log.lines) == 5 and log.lines[0].startswith("mf_model epoch 1: train_loss=")
    assert "samples/s" in log.lines[0]
    assert log.lines[4].startswith("export: ONNX max |diff|")  # tracking_export.log_exports
    assert run.data.tags["export.onnx_opset"] == "18"
    artifacts = {a.path for d in ("plots", "id_maps") for a in client.list_artifacts(
        tracked.run_id, d)}
    assert artifacts == {"plots/learning_curve.png", "id_maps/user_map.parquet"}
    assert tracked.learning_curve[:8] == b"\x89PNG\r\n\x1a\n"
    # artifacts live in the lake, beside the database
    assert list((mlflow_lake / "mlflow" / "artifacts").rglob("learning_curve.png"))

    pairs = np.array([[0, 0], [5, 29], [47, 3], [12, 17]], dtype=np.int64)
    with tracker.activated():
        loaded = mlflow.pyfunc.load_model(tracked.model_uri)
    predicted = loaded.predict(pairs)
    with torch.no_grad():
        expected = tracked.result.model.cpu().eval()(torch.from_numpy(pairs[:, 0]),
                                                     torch.from_numpy(pairs[:, 1]))
    np.testing.assert_allclose(predicted, expected.numpy(), rtol=1e-6)
    assert tracked.registered_version == "1" and tracked.champion
    assert str(client.get_model_version_by_alias("recsys-mf", CHAMPION).version) == "1"


def test_a_raising_training_ends_its_run_failed(tracker, planted_data) -> None:
    with pytest.raises(ValueError, match="cuda:99"):
        _train(tracker, planted_data, loop=TrainConfig(epochs=1, device="cuda:99"))
    [run] = tracker.client().search_runs([tracker.experiment_id()])
    assert run.info.status == "FAILED" and run.data.tags[TAG_DAGSTER_RUN] == "dagster-run-1"
    assert mlflow.active_run() is None
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_champion_moves_only_for_better_scores_on_the_same_data(tracker) -> None:
    client = tracker.client()
    tracker.experiment_id()
    client.create_registered_model("recsys-mf")

    def register(value: float, valid_hash: str) -> tuple[bool, str]:
        version = client.create_model_version("recsys-mf", source="file:///nowhere").version
        won = gate(client, "recsys-mf", version,
                   Contender("rmse", value, "min", valid_hash)).promoted
        return won, str(client.get_model_version_by_alias("recsys-mf", CHAMPION).version)

    assert register(0.90, "A") == (True, "1")  # first: no champion yet
    assert register(0.95, "A") == (False, "1")  # worse on the same data
    assert register(0.90, "A") == (False, "1")  # a tie keeps the champion
    assert register(0.85, "A") == (True, "4")  # better on the same data
    # other validation data, no re-scoring possible: not comparable, the champion stays
    assert register(0.40, "B") == (False, "4")
    tags = client.get_model_version("recsys-mf", "5").tags
    assert tags[TAG_VALID_SHA] == "B" and float(tags["selection_value"]) == 0.40


def test_a_worse_retrain_keeps_the_champion(tracker, planted_data) -> None:
    first = _train(tracker, planted_data)
    worse = _train(tracker, planted_data, loop=TrainConfig(epochs=1, batch_size=64, lr=1e-4,
                                                           device="cpu"))
    assert first.champion and not worse.champion and "does not beat" in worse.champion_reason
    alias = tracker.client().get_model_version_by_alias("recsys-mf", CHAMPION)
    assert str(alias.version) == first.registered_version
    assert tracker.client().get_run(worse.run_id).data.tags["champion"] == "false"


def test_leaderboard_rows_take_the_latest_finished_run_per_family_on_this_data(tracker):
    client = tracker.client()
    experiment = tracker.experiment_id()

    def run(family: str, rmse: float, train_sha: str, status: str = "FINISHED") -> str:
        created = client.create_run(experiment, tags={TAG_FAMILY: family,
                                                      TAG_TRAIN_SHA: train_sha,
                                                      "dagster.asset_key": f"models/{family}"})
        client.log_metric(created.info.run_id, "test_rmse", rmse)
        client.log_metric(created.info.run_id, "train_loss", 0.1)
        client.set_terminated(created.info.run_id, status)
        return created.info.run_id

    run("mf", 0.95, "A")
    latest_mf = run("mf", 0.91, "A")
    run("mf", 0.80, "A", status="FAILED")
    run("mf", 0.70, "B")
    bias = run("bias", 0.93, "A")
    rows = {r["family"]: r for r in leaderboard_rows(tracker, "A")}
    assert set(rows) == {"mf", "bias"}
    assert rows["mf"]["run_id"] == latest_mf and rows["mf"]["test_rmse"] == 0.91
    assert rows["bias"]["run_id"] == bias and "train_loss" not in rows["bias"]
    assert rows["mf"]["model"] == "mf"
    with pytest.raises(ValueError, match="no FINISHED run .* sha256 C"):
        leaderboard_rows(tracker, "C")


def test_popularity_is_logged_without_rating_metrics(tracker, planted_data) -> None:
    tracked = train_and_track(tracker, _Log(), name="popularity_model", data=planted_data,
                              model_config=PopularityConfig(),
                              train_config=TrainConfig(device="cpu"),
                              tags={**TAGS, TAG_FAMILY: "popularity"})
    metrics = tracker.client().get_run(tracked.run_id).data.metrics
    assert "test_rmse" not in metrics and "test_ndcg_at_10" in metrics
    assert tracked.learning_curve is None and tracked.champion


def test_default_store_is_sqlite_in_the_lake_and_env_is_restored(tracker, mlflow_lake,
                                                                  monkeypatch) -> None:
    assert tracker.resolved_tracking_uri() == f"sqlite:///{mlflow_lake / 'mlflow' / 'mlflow.db'}"
    assert tracker.ui_command().endswith("mlflow.db")
    before = mlflow.get_tracking_uri()
    with tracker.activated():
        assert os.environ["MLFLOW_TRACKING_URI"] == tracker.resolved_tracking_uri()
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() == before
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracker.resolved_tracking_uri() == "http://tracking.example:5000"
    assert tracker.model_copy(update={"tracking_uri": "sqlite:///x.db"}
                              ).resolved_tracking_uri() == "sqlite:///x.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


def _gone_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_run_left_running_by_a_killed_process_is_ended_by_the_next(tracker) -> None:
    # a training step killed by SIGKILL / the OOM killer cannot end its run: the next run
    # started on this host ends it KILLED; live processes' and other hosts' runs stay RUNNING
    import socket

    from recsys_pipeline.mlflow_resource import TAG_ENDED, TAG_HOST, TAG_PID

    client, experiment_id = tracker.client(), tracker.experiment_id()
    host = socket.gethostname()
    dead = client.create_run(experiment_id, tags={TAG_HOST: host, TAG_PID: str(_gone_pid())})
    alive = client.create_run(experiment_id, tags={TAG_HOST: host, TAG_PID: str(os.getppid())})
    elsewhere = client.create_run(experiment_id, tags={TAG_HOST: host + "-other",
                                                       TAG_PID: str(_gone_pid())})
    untagged = client.create_run(experiment_id)
    with tracker.start_run("next", {}) as run:
        assert run.data.tags[TAG_HOST] == host and run.data.tags[TAG_PID] == str(os.getpid())
        gone = client.get_run(dead.info.run_id)
        assert gone.info.status == "KILLED" and gone.info.end_time is not None
        assert "was gone when a later run started" in gone.data.tags[TAG_ENDED]
        for other in (alive, elsewhere, untagged):
            assert client.get_run(other.info.run_id).info.status == "RUNNING"
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert tracker.end_orphaned_runs(experiment_id) == []  # nothing more to end
