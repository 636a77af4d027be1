"""ONNX export + original-id pyfunc of every exportable family, logged in an MLflow run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from recsys_pipeline import tracking_export
from recsys_pipeline.models.cooccurrence import CooccurrenceConfig, CooccurrenceModel
from recsys_pipeline.tracking_export import (
    ONNX_DIR,
    PYFUNC_DIR,
    PYFUNC_MODEL_PATH,
    SKIP_REASON,
    lake_ids,
    log_exports,
    onnx_export_checked,
)
from recsys_pipeline_tests.serving.planted import ITEM_IDS, USER_IDS, World

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

RATING = ["bias", "popularity", "mf", "mlp", "neumf", "deepfm"]
RANKING = ["ease", "autoencoder", "multvae", "two_tower"]


@pytest.mark.parametrize("family", RATING)
def test_rating_onnx_matches_torch(world: World, family: str) -> None:
    import onnx

    data, diff, info = onnx_export_checked(world.models[family])
    assert diff < 1e-4 and info["opset"] == 18
    assert info["inputs"] == {"pairs": ["int64", ["batch", 2]]}
    assert [i.name for i in onnx.load_from_string(data).graph.input] == ["pairs"]


@pytest.mark.parametrize("family", RANKING)
def test_ranking_onnx_matches_torch(ranking_models: dict, family: str) -> None:
    import onnxruntime as ort

    model = ranking_models[family]
    data, diff, info = onnx_export_checked(model)
    assert diff < 1e-4 and info["opset"] == 18
    if family == "two_tower":
        return
    # fold-in graph: a user's row in, every item column's score out; also a row never seen
    row = np.zeros((1, model.n_items), np.float32)
    row[0, [1, 4]] = 1.0
    got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(
        ["scores"], {"rows": row})[0]
    np.testing.assert_allclose(got, model.score_all_from(row).numpy(), atol=1e-4, rtol=0)


def test_sequence_models_are_skipped() -> None:
    model = CooccurrenceModel(5, CooccurrenceConfig())
    with pytest.raises(ValueError, match="sequence model"):
        onnx_export_checked(model)


def _run_exports(tracker, model, users, items, onnx: bool = True) -> str:
    with tracker.start_run("export-test", {}) as run:
        log_exports(model, users, items, onnx=onnx)
    return run.info.run_id


def _frame(users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users.astype(np.int64), "item_id": items.astype(np.int64)})


@pytest.mark.parametrize("family", ["mf", "deepfm"])
def test_pyfunc_scores_original_ids_like_torch(world: World, tracker, family: str) -> None:
    model = world.models[family]
    run_id = _run_exports(tracker, model, USER_IDS, ITEM_IDS)
    client = tracker.client()
    run = client.get_run(run_id)
    assert run.data.tags["export.onnx_opset"] == "18"
    assert float(run.data.params["export.onnx_max_abs_diff"]) < 1e-4
    assert {a.path for a in client.list_artifacts(run_id)} == {ONNX_DIR, PYFUNC_DIR}
    assert {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(
        run_id, PYFUNC_MODEL_PATH)} == {"config.json", "state_dict.pt"}
    rng = np.random.default_rng(3)
    u, i = rng.integers(0, len(USER_IDS), 50), rng.integers(0, len(ITEM_IDS), 50)
    with tracker.activated():
        loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/{PYFUNC_DIR}")
        got = np.asarray(loaded.predict(_frame(USER_IDS[u], ITEM_IDS[i])))
        # an unknown user (an index, not an id) and an unknown item score NaN
        odd = np.asarray(loaded.predict(_frame(np.array([0, USER_IDS[0]]),
                                               np.array([ITEM_IDS[0], 8]))))
        onnx_model = mlflow.onnx.load_model(f"runs:/{run_id}/{ONNX_DIR}")
    with torch.no_grad():
        want = model.score(torch.from_numpy(u), torch.from_numpy(i)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.isnan(odd).all()
    assert {o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")} == {18}


def test_fold_in_pyfunc_maps_item_columns(tracker, ranking_models: dict,
                                          fold_in_history) -> None:
    model = ranking_models["ease"]
    users = 500 + np.arange(model.n_users)
    items = 10 * np.arange(model.n_items)[::-1]  # columns need not be in id order
    run_id = _run_exports(tracker, model, users, items, onnx=False)
    assert "export.onnx_opset" not in tracker.client().get_run(run_id).data.tags
    with tracker.activated():
        loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/{PYFUNC_DIR}")
        got = np.asarray(loaded.predict(_frame(users[[0, 3, 3]], items[[2, 0, 8]])))
    want = model.score_all_from(fold_in_history[[0, 3]]).numpy()
    np.testing.assert_allclose(got, [want[0, 2], want[1, 0], want[1, 8]], atol=1e-5)


def test_weights_beyond_one_onnx_file_skip_the_onnx_export_only(
        tracker, ranking_models: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """EASE's n_items² matrix passes protobuf's 2 GiB beyond ~23k items (onnxruntime then
    fails with narrowing_error): the run logs the pyfunc and says why there is no ONNX."""
    model = ranking_models["ease"]
    weights = model.weights.numel() * 4
    assert tracking_export.onnx_size_problem(model) is None
    monkeypatch.setattr(tracking_export, "ONNX_MAX_BYTES", weights - 1)
    problem = tracking_export.onnx_size_problem(model)
    assert problem is not None and "exceed the 2 GiB of one ONNX file" in problem
    with pytest.raises(ValueError, match="exceed the 2 GiB"):
        onnx_export_checked(model)
    run_id = _run_exports(tracker, model, 500 + np.arange(model.n_users),
                          np.arange(model.n_items))
    run = tracker.client().get_run(run_id)
    assert run.data.tags["export.onnx_skipped"] == problem
    assert {a.path for a in tracker.client().list_artifacts(run_id)} == {PYFUNC_DIR}
    # the stored training rows are not part of the exported graph: they do not count
    monkeypatch.setattr(tracking_export, "ONNX_MAX_BYTES", weights)
    assert tracking_export.onnx_size_problem(model) is None


def test_sequence_model_run_is_tagged_skipped(tracker) -> None:
    run_id = _run_exports(tracker, CooccurrenceModel(5, CooccurrenceConfig()), None, None)
    run = tracker.client().get_run(run_id)
    assert run.data.tags["export.skipped"] == SKIP_REASON
    assert not tracker.client().list_artifacts(run_id)


def _cycle_model() -> CooccurrenceModel:
    """Co-occurrence of the cycle of tokens 1 → 2 → … → 6 → 1."""
    return CooccurrenceModel.fit(np.array([[(s + j) % 6 + 1 for j in range(8)]
                                           for s in range(6)]), 6)


def test_sequence_pyfunc_lists_next_items_in_original_ids(tracker) -> None:
    ids = np.array([101, 205, 307, 409, 511, 613])  # token t is ids[t - 1]
    with tracker.start_run("export-test", {}) as run:
        log_exports(_cycle_model(), None, ids, onnx=True, sequence_width=3)
    client = tracker.client()
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["export.onnx_skipped"] == SKIP_REASON and "export.skipped" not in tags
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {PYFUNC_DIR}
    frame = pd.DataFrame({"session_id": [7, 7, 3, 9],
                          "item_id": [101, 205, 511, 999],  # 999: unknown, session 9 empty
                          "timestamp": [1, 2, 5, 1]})
    with tracker.activated():
        loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{PYFUNC_DIR}")
        got = loaded.predict(frame, params={"k": 2})
        # users' histories work too; without times, rows are in order (last item 101 → 205)
        by_user = loaded.predict(pd.DataFrame({"user_id": [4, 4], "item_id": [307, 101]}))
        # times as the lake stores them (datetimes) order a session as integers do
        dated = loaded.predict(frame.assign(timestamp=pd.to_datetime(frame.timestamp,
                                                                     unit="s", utc=True)),
                               params={"k": 2})
        with pytest.raises(Exception, match="item_id"):
            loaded.predict(pd.DataFrame({"session_id": [1]}))
        with pytest.raises(Exception, match="'item_id' must hold integers"):
            loaded.predict(pd.DataFrame({"session_id": [1], "item_id": [101.5]}))
    assert list(got.columns) == ["session_id", "rank", "item_id", "score"]
    assert got["session_id"].tolist() == [3, 3, 7, 7] and got["rank"].tolist() == [1, 2, 1, 2]
    assert got["item_id"].tolist()[0] == 613 and got["item_id"].tolist()[2] == 307
    assert not set(got[got.session_id == 7].item_id) & {101, 205}
    pd.testing.assert_frame_equal(dated, got)
    assert list(by_user.columns[:1]) == ["user_id"] and by_user["item_id"].iloc[0] == 205
    assert len(by_user) == 4  # default k = 10, fewer left: six items less the two rated


def test_lake_ids_use_matrix_columns_for_fold_in_models(world_lake: Path,
                                                        ranking_models: dict) -> None:
    from recsys_pipeline.data.lake import write_parquet

    # two-tower indexes the lake's id maps; a fold-in model its matrix columns (missing yet)
    users, items = lake_ids(world_lake, ranking_models["two_tower"])
    assert users.tolist() == USER_IDS.tolist() and items.tolist() == ITEM_IDS.tolist()
    model = ranking_models["ease"]
    assert lake_ids(world_lake, model) == (None, None)
    columns = pa.table({"column": np.arange(9)[::-1].astype(np.int32),
                        "item_idx": np.arange(9).astype(np.int32),
                        "item_id": ITEM_IDS[:9]})
    write_parquet(columns, world_lake / "prepared" / "strong_generalization_items.parquet")
    _, items = lake_ids(world_lake, model)
    assert items.tolist() == ITEM_IDS[:9][::-1].tolist()
    assert lake_ids(world_lake, CooccurrenceModel(5, CooccurrenceConfig())) == (None, None)


def test_mlflow_models_predict_cli(world: World, tracker, tmp_path: Path) -> None:
    """The logged pyfunc serves through MLflow's own CLI (local env, the test's store)."""
    model = world.models["mf"]
    run_id = _run_exports(tracker, model, USER_IDS, ITEM_IDS, onnx=False)
    frame = _frame(USER_IDS[[0, 5, 9]], ITEM_IDS[[1, 2, 3]])
    frame.to_csv(tmp_path / "in.csv", index=False)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracker.resolved_tracking_uri()}
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    done = subprocess.run(
        [str(mlflow_cli), "models", "predict", "-m", f"runs:/{run_id}/{PYFUNC_DIR}",
         "-i", str(tmp_path / "in.csv"), "-t", "csv", "--env-manager", "local",
         "-o", str(tmp_path / "out.json")], env=env, capture_output=True, text=True,
        timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads((tmp_path / "out.json").read_text())["predictions"]
    with torch.no_grad():
        want = model.score(torch.tensor([0, 5, 9]), torch.tensor([1, 2, 3])).numpy()
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, atol=1e-5)
