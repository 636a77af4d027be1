"""The rating autoencoder through ``train_and_track``: no pt2 pair graph (its row scoring
cannot be traced), the original-id pyfunc registered as ``recsys-autoencoder_rating``, and
the champion gate re-scoring such a champion on changed validation data."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from recsys_pipeline.champion import CHAMPION
from recsys_pipeline.evaluation.rating import predict, rmse
from recsys_pipeline.models.autoencoder_rating import (
    AutoEncoderRatingConfig,
    AutoEncoderRatingModel,
)
from recsys_pipeline.tracking import (
    TAG_DAGSTER_RUN,
    TAG_FAMILY,
    TAG_TRAIN_SHA,
    TAG_VALID_SHA,
    MlflowResource,
    train_and_track,
)
from recsys_pipeline.training.experiment import ExperimentData
from recsys_pipeline.training.loop import TrainConfig
from recsys_pipeline_tests.train.test_champion_gate import _maps

CONFIG = AutoEncoderRatingConfig(hidden=(16,), dropout=0.2, seed=1)
GOOD = TrainConfig(epochs=30, batch_size=8, lr=1e-2, device="cpu")
BAD = TrainConfig(epochs=1, batch_size=8, lr=1e-4, device="cpu")
NAME = "recsys-autoencoder_rating"


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, line: str) -> None:
        self.lines.append(line)


def _train(tracker: MlflowResource, data: ExperimentData, loop: TrainConfig, valid_sha: str,
           maps: dict | None = None, log: _Log | None = None):
    tags = {TAG_DAGSTER_RUN: "r", TAG_FAMILY: "autoencoder_rating", TAG_TRAIN_SHA: "t" * 64,
            TAG_VALID_SHA: valid_sha}
    return train_and_track(tracker, log or _Log(), name="autoencoder_rating_model", data=data,
                           model_config=CONFIG, train_config=loop, tags=tags,
                           id_maps=maps or _maps(data))


def test_logged_registered_and_scored_through_the_original_id_pyfunc(tracker, planted_data):
    log = _Log()
    tracked = _train(tracker, planted_data, GOOD, "A", log=log)
    model = tracked.result.model
    assert isinstance(model, AutoEncoderRatingModel)
    client = tracker.client()
    run = client.get_run(tracked.run_id)
    assert run.data.params["model.unobserved_weight"] == "0.0"
    assert run.data.params["model.clamp"] == "True"
    assert "torch.export" in run.data.tags["export.pt2_skipped"]
    assert any(line.startswith("export: ONNX max |diff|") for line in log.lines)
    curve = client.get_metric_history(tracked.run_id, "valid_rmse")
    assert [m.step for m in curve] == list(range(1, len(tracked.result.history) + 1))
    assert run.data.metrics["test_rmse"] == pytest.approx(tracked.result.test["rmse"])
    assert run.data.metrics["test_mae"] == pytest.approx(tracked.result.test["mae"])
    # registered apart from the ranking autoencoder, as the original-id pyfunc
    assert tracked.registered_version == "1" and tracked.champion
    version = client.get_model_version_by_alias(NAME, CHAMPION)
    assert version.source.endswith("/original_ids_model")
    with tracker.activated():
        loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@{CHAMPION}")
    users, items = planted_data.test.users[:5], planted_data.test.items[:5]
    frame = pd.DataFrame({"user_id": users.numpy() + 1000, "item_id": items.numpy() + 5000})
    with torch.no_grad():
        expected = model.cpu().eval()(users, items).numpy()
    np.testing.assert_allclose(np.asarray(loaded.predict(frame)), expected, rtol=1e-5)


def test_on_changed_data_the_autoencoder_champion_is_rescored(tracker, planted_data) -> None:
    champion = _train(tracker, planted_data, GOOD, "A")
    maps = _maps(planted_data, shifted_users=12)  # 12 users the champion never saw
    worse = _train(tracker, planted_data, BAD, "B", maps=maps)
    gate = worse.gate
    known = ~np.isin(planted_data.valid.users.numpy(), np.arange(12))
    assert gate.compared_rows == int(known.sum()) < len(planted_data.valid)
    assert not worse.champion
    rows = planted_data.valid.subset(torch.from_numpy(np.flatnonzero(known)))
    expected = rmse(predict(champion.result.model.cpu(), rows), rows.ratings)
    assert gate.champion_value == pytest.approx(expected, rel=1e-5)
