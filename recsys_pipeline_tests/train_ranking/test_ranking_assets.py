"""Ranking assets materialized in process on the tiny release: strong-generalization matrix,
the seven ranking models (one MLflow run each) and the ranking leaderboard."""

from __future__ import annotations

import dagster as dg
import duckdb
import mlflow.artifacts
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from recsys_pipeline.assets.ingest import ingest_assets
from recsys_pipeline.assets.prepare import prepare_assets
from recsys_pipeline.assets.ranking import ranking_assets, ranking_checks, ranking_resources
from recsys_pipeline.data.lake import read_parquet
from recsys_pipeline.data.sparse import load_matrices
from recsys_pipeline.data.store import load_sessions
from recsys_pipeline.models.ranking_base import load_ranking_model
from recsys_pipeline.tracking import TAG_DAGSTER_RUN, TAG_FAMILY, TAG_TRAIN_SHA
from recsys_pipeline.tracking_ranking import BASELINE_MODEL, TAG_PROTOCOL, TAG_RANKING_TRAIN_SHA
from recsys_pipeline.training.ranking_experiment import StrongGenSpec, held_out_counts

MODELS = ("autoencoder", "multvae", "ease", "gru4rec", "sasrec", "cooccurrence", "two_tower")
PROTOCOL = {"autoencoder": "strong_generalization", "multvae": "strong_generalization",
            "ease": "strong_generalization", "gru4rec": "next_item", "sasrec": "next_item",
            "cooccurrence": "next_item", "two_tower": "per_user_topk"}
SMALL = {"epochs": 2, "batch_size": 16}
RUN_CONFIG = {
    "strong_generalization_matrix": {"config": {"n_valid_users": 3,
                                                          "n_test_users": 3}},
    **{f"models__{m}_model": {"config": SMALL}
       for m in ("autoencoder", "multvae", "gru4rec", "sasrec", "two_tower")},
}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory):
    """Ingest + prepare + every ranking asset, once, on the tiny release."""
    from recsys_pipeline.model_io import build_train_resources
    from recsys_pipeline.resources import build_resources
    from recsys_pipeline_tests.conftest import write_tiny_release

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
    lake = tmp_path_factory.mktemp("ranking") / "lake"
    release = write_tiny_release(lake / "raw" / "tiny")
    root = str(lake)
    resources = {**build_resources(root), **build_train_resources(root),
                 **ranking_resources(root)}
    result = dg.materialize(
        [*ingest_assets, *prepare_assets, *ranking_assets, *ranking_checks],
        resources=resources, run_config=dg.RunConfig(
            {"raw__movielens_release": {"config": {"path": str(release)}}, **RUN_CONFIG}))
    yield lake, result, resources["mlflow"]
    mp.undo()


def _runs(mlflow_resource) -> dict:
    client = MlflowClient(mlflow_resource.resolved_tracking_uri())
    exp = client.get_experiment_by_name(mlflow_resource.experiment_name)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}, client


def test_strong_generalization_matrix_holds_users_out(materialized) -> None:
    lake, result, _ = materialized
    mats = load_matrices(lake / "prepared" / "strong_generalization_matrix")
    items = read_parquet(lake / "prepared" / "strong_generalization_items.parquet")
    train = mats.binary["train"]
    assert train.shape[1] == items.num_rows
    for split in ("valid", "test"):
        fold, held = mats.fold_in_pair(split)
        users = np.flatnonzero(held.getnnz(1) > 0)
        assert users.size == 3  # the configured held-out count
        assert train[users].nnz == 0  # held-out users are never trained on
        assert fold[users].multiply(held[users]).nnz == 0  # fold-in and ranked rows disjoint
    explicit = mats.explicit["train"]
    assert explicit.data.min() >= 4.0  # positives only
    assert (np.asarray(train.sum(0)).ravel() > 0).sum() <= items.num_rows


def test_every_ranking_model_logs_one_run(materialized) -> None:
    lake, result, mlflow_resource = materialized
    assert result.success
    runs, client = _runs(mlflow_resource)
    assert set(runs) == {f"{m}_model" for m in MODELS}
    for family in MODELS:
        run = runs[f"{family}_model"]
        tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
        assert run.info.status == "FINISHED"
        assert tags[TAG_DAGSTER_RUN] == result.run_id
        assert tags[TAG_FAMILY] == family and tags[TAG_PROTOCOL] == PROTOCOL[family]
        assert len(tags[TAG_RANKING_TRAIN_SHA]) == 64
        assert TAG_TRAIN_SHA not in tags  # stays out of the rating leaderboard
        assert any(k.startswith("model.") for k in params)
        assert 0.0 <= metrics["test_ndcg_at_10"] <= 1.0
        assert 0.0 <= metrics["best_valid_ndcg_at_10"] <= 1.0
        assert metrics["train_seconds"] > 0  # closed-form fits (EASE, co-occurrence) too
        if family in ("autoencoder", "multvae", "gru4rec", "sasrec", "two_tower"):
            assert params["train.epochs"] == "2"
            curve = client.get_metric_history(run.info.run_id, "valid_ndcg_at_10")
            assert [m.step for m in curve] == [1, 2]  # one point per epoch
            assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
            epochs = client.get_metric_history(run.info.run_id, "epoch_train_seconds")
            assert [m.step for m in epochs] == [1, 2]
            # the run's train_seconds is the whole fit, not the last epoch's pass
            assert metrics["train_seconds"] >= sum(m.value for m in epochs)
            assert len(client.get_metric_history(run.info.run_id, "train_seconds")) == 1
        if PROTOCOL[family] == "strong_generalization":
            assert 0.0 <= metrics["peruser_test_ndcg_at_10"] <= 1.0
            assert metrics["test_recall_at_20"] <= 1.0
        if PROTOCOL[family] in ("next_item", "per_user_topk"):  # re-scored on temporal splits
            assert params["data.split.method"] == "user_temporal"
        if PROTOCOL[family] == "next_item":
            assert {"test_hr_at_1", "test_mrr_at_20", "test_map_at_5",
                    "test_precision_at_10"} <= set(metrics)
            # what a later challenger needs to re-score this run: the split and token ids
            folder = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="token_items", dst_path=str(
                    lake.parent / family), tracking_uri=mlflow_resource.resolved_tracking_uri())
            token_ids = read_parquet(f"{folder}/item_ids.parquet").column("item_id")
            sessions = load_sessions(lake / "prepared" / "session_sequences")
            item_map = read_parquet(lake / "prepared" / "item_map.parquet").sort_by("item_idx")
            assert token_ids.to_pylist() == item_map.column("item_id").take(
                sessions.vocab).to_pylist()
        version = client.get_model_version(f"recsys-{family}", "1")
        assert version.run_id == run.info.run_id
        # the registry entry of every family is a deployable MLflow model (its pyfunc)
        assert version.source.endswith("/original_ids_model")
        with mlflow_resource.activated():
            champion = mlflow.pyfunc.load_model(f"models:/recsys-{family}@champion")
        import pandas as pd

        users = read_parquet(lake / "prepared" / "user_map.parquet").column("user_id")
        frame = pd.DataFrame({"user_id": users.to_pylist()[:2], "item_id": [-5, -5]})
        if PROTOCOL[family] == "next_item":  # unknown items only: no list, not an error
            assert len(champion.predict(frame)) == 0
        else:  # unknown item: NaN, not an error
            assert np.isnan(np.asarray(champion.predict(frame))).all()
        assert str(client.get_registered_model(f"recsys-{family}").aliases["champion"]) == "1"
        assert run.data.tags["champion.decision"] == "promoted"
        meta = result.asset_materializations_for_node(f"models__{family}_model")[0].metadata
        assert meta["champion_decision"].value == "promoted"
        assert meta["champion_reason"].value == "no champion yet"


def test_stored_models_reload_and_score_like_trained(materialized) -> None:
    lake, result, _ = materialized
    for family in MODELS:
        folder = lake / "models" / f"{family}_model"
        model = load_ranking_model(folder)
        assert model.family == family
        trained = result.output_for_node(f"models__{family}_model")
        for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values(),
                                strict=True):
            assert torch.equal(a.cpu(), b), f"{family}: {name} differs after reload"


def test_ranking_leaderboard_rows_and_checks(materialized) -> None:
    lake, result, _ = materialized
    table = read_parquet(lake / "reports" / "ranking_comparison.parquet")
    rows = table.to_pylist()
    assert sorted(r["model"] for r in rows) == sorted([*(f"{m}_model" for m in MODELS),
                                                       BASELINE_MODEL])
    assert {r["model"]: r["protocol"] for r in rows} == {
        **{f"{m}_model": p for m, p in PROTOCOL.items()}, BASELINE_MODEL: "next_item"}
    # the popularity baseline: scored in the co-occurrence run, on its rows, its own metrics
    [baseline] = [r for r in rows if r["model"] == BASELINE_MODEL]
    [cooc] = [r for r in rows if r["model"] == "cooccurrence_model"]
    assert baseline["run_id"] == cooc["run_id"] and baseline["family"] == "popularity"
    run = MlflowClient(materialized[2].resolved_tracking_uri()).get_run(cooc["run_id"])
    for k in ("test_ndcg_at_10", "test_hr_at_1", "test_mrr_at_20", "test_map_at_5"):
        assert baseline[k] == run.data.metrics[f"baseline_popularity_{k}"]
        assert 0.0 <= baseline[k] <= 1.0
    assert baseline["best_valid_ndcg_at_10"] == run.data.metrics[
        "baseline_popularity_valid_ndcg_at_10"]
    for protocol in set(PROTOCOL.values()):
        block = [r for r in rows if r["protocol"] == protocol]
        assert [r["rank"] for r in block] == list(range(1, len(block) + 1))
        ndcg = [r["test_ndcg_at_10"] for r in block]
        assert ndcg == sorted(ndcg, reverse=True)
    meta = result.asset_materializations_for_node("reports__ranking_comparison")[0].metadata
    assert "min(K, n_heldout)" in meta["protocols"].value
    assert meta["dagster/row_count"].value == len(MODELS) + 1
    view = meta["duckdb_view"].value
    with duckdb.connect(str(lake / "lake.duckdb"), read_only=True) as conn:
        assert conn.execute(f"select count(*) from {view}").fetchall() == [(len(MODELS) + 1,)]
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == len(MODELS) and all(e.passed for e in evaluations)


@pytest.mark.parametrize(("n_users", "asked", "expected"), [
    (610, (100, 100), (100, 100)),  # ml-latest-small: the protocol's counts fit
    (30, (100, 100), (3, 3)),  # tiny data: clamped to n_users // 10 each
    (30, (3, 3), (3, 3)),
    (5, (100, 100), (1, 1)),
])
def test_held_out_counts_clamp_on_small_data(n_users: int, asked: tuple, expected: tuple) -> None:
    spec = StrongGenSpec(n_valid_users=asked[0], n_test_users=asked[1])
    assert held_out_counts(n_users, spec) == expected


def test_held_out_counts_names_too_few_users() -> None:
    with pytest.raises(ValueError, match="only 2 user"):
        held_out_counts(2, StrongGenSpec())


@pytest.mark.parametrize(("key", "value"), [("n_valid_users", 0), ("n_test_users", 0),
                                          ("n_test_users", -3)])
def test_held_out_counts_below_one_name_the_key(key: str, value: int) -> None:
    # 0 validation users used to build a matrix without validation rows, and every fold-in
    # model then failed with "no user has both fold-in and held-out interactions"
    with pytest.raises(ValueError, match=f"{key}={value} must be >= 1"):
        held_out_counts(601, StrongGenSpec(**{key: value}))


def test_ranking_presets_are_valid_run_configs(tmp_path) -> None:
    from recsys_pipeline.assets.ranking_configs import (
        RANKING_PRESETS,
        AutoEncoderModelConfig,
        GRU4RecModelConfig,
        MultVAEModelConfig,
        SASRecModelConfig,
        TwoTowerModelConfig,
    )
    from recsys_pipeline.assets.train import TRAIN_PRESETS
    from recsys_pipeline.model_io import build_train_resources
    from recsys_pipeline.resources import build_resources

    job = dg.define_asset_job("ranking_job", selection=[*ranking_assets])
    root = str(tmp_path / "lake")
    defs = dg.Definitions(assets=[*ingest_assets, *prepare_assets, *ranking_assets],
                          jobs=[job], resources={**build_resources(root),
                                                 **build_train_resources(root),
                                                 **ranking_resources(root)})
    resolved = defs.resolve_job_def("ranking_job")
    assert set(RANKING_PRESETS) == {"demo", "full"}
    for preset in RANKING_PRESETS.values():
        dg.validate_run_config(resolved, preset)
    # the full preset merges with TRAIN_PRESETS["full"] into one run config (no shared op)
    full = RANKING_PRESETS["full"]["ops"]
    assert not set(full) & set(TRAIN_PRESETS["full"]["ops"])
    assert {f"models__{m}_model" for m in ("autoencoder", "multvae", "gru4rec",
                                           "sasrec", "two_tower")} <= set(full)
    # each model section builds its core config (so the values pass the model's own checks)
    for name, cls in (("autoencoder", AutoEncoderModelConfig), ("multvae", MultVAEModelConfig),
                      ("gru4rec", GRU4RecModelConfig), ("sasrec", SASRecModelConfig),
                      ("two_tower", TwoTowerModelConfig)):
        config = cls(**full[f"models__{name}_model"]["config"])
        config.to_core()
        assert config.loop("cpu").epochs > cls().epochs  # trains longer than the demo
    with pytest.raises(dg.DagsterInvalidConfigError, match="hiden"):
        dg.validate_run_config(resolved, {"ops": {"models__autoencoder_model": {
            "config": {"hiden": [8]}}}})


@pytest.mark.parametrize("family", ["multvae", "sasrec", "two_tower"])
def test_a_ranking_run_that_died_resumes_from_its_checkpoint(materialized, tmp_path, family,
                                                            monkeypatch) -> None:
    """checkpoint: true saves every epoch; a run killed after epoch 2 of 4, re-executed with
    the same config, trains epochs 3 and 4 only and ends with the weights of an uninterrupted
    run (Mult-VAE's KL-annealing step, SASRec's dropout, two-tower's shuffles included)."""
    import shutil

    from recsys_pipeline.model_io import build_train_resources
    from recsys_pipeline.resources import build_resources
    from recsys_pipeline.training import ranking_loop

    lake = tmp_path / "lake"
    shutil.copytree(materialized[0], lake)
    root = str(lake)
    resources = {**build_resources(root), **build_train_resources(root),
                 **ranking_resources(root)}
    asset = next(a for a in ranking_assets
                 if dg.AssetKey(["models", f"{family}_model"]) in a.keys)
    config = dg.RunConfig({f"models__{family}_model": {"config": {
        **SMALL, "epochs": 4, "patience": None, "eval_every": 1, "checkpoint": True}}})

    def run() -> dg.ExecuteInProcessResult:
        return dg.materialize([*ingest_assets, *prepare_assets, *ranking_assets],
                              selection=dg.AssetSelection.assets(asset), resources=resources,
                              run_config=config, raise_on_error=False)

    def weights() -> dict:
        return load_ranking_model(lake / "models" / f"{family}_model").state_dict()

    assert run().success
    uninterrupted = weights()
    assert not list((lake / "checkpoints").iterdir())  # removed once training ended

    real_save, saves = ranking_loop.save_checkpoint, []

    def save(path, state, die_at=None):
        real_save(path, state)
        saves.append(state["epoch"])
        if state["epoch"] == die_at:
            raise RuntimeError("killed after epoch 2")

    monkeypatch.setattr(ranking_loop, "save_checkpoint", lambda p, s: save(p, s, die_at=2))
    assert not run().success
    [left] = (lake / "checkpoints").iterdir()
    assert left.name.startswith(f"{family}_model-") and saves == [1, 2]
    monkeypatch.setattr(ranking_loop, "save_checkpoint", save)
    assert run().success
    assert saves == [1, 2, 3, 4]  # resumed after epoch 2
    got = weights()
    assert all(torch.equal(got[k], uninterrupted[k]) for k in uninterrupted)
    assert not list((lake / "checkpoints").iterdir())


def test_fold_in_pyfunc_scores_every_user_as_recommend_does(materialized) -> None:
    # the logged original-id pyfunc of a fold-in model scores the strong-generalization
    # held-out users (no stored row) from their train-split positives, as `recommend` does,
    # instead of an empty row (EASE: every score 0)
    import pandas as pd

    from recsys_pipeline.serving import lake_models as lm

    lake, _, mlflow_resource = materialized
    runs, _ = _runs(mlflow_resource)
    held_out = set()
    for split in ("valid", "test"):
        fold_in, _ = load_matrices(lake / "prepared" / "strong_generalization_matrix"
                                   ).fold_in_pair(split)
        held_out |= set(np.flatnonzero(fold_in.getnnz(1)).tolist())
    assert len(held_out) == 6
    for family in ("ease", "multvae", "autoencoder"):
        served = lm.resolve_model(lake, f"{family}_model")
        users = served.maps.users.column("user_id").to_numpy()
        items = served.maps.items.column("item_id").to_numpy()
        frame = pd.DataFrame({"user_id": np.repeat(users, len(items)),
                              "item_id": np.tile(items, len(users))})
        with mlflow_resource.activated():
            pyfunc = mlflow.pyfunc.load_model(
                f"runs:/{runs[f'{family}_model'].info.run_id}/original_ids_model")
            got = np.asarray(pyfunc.predict(frame)).reshape(len(users), len(items))
        with torch.no_grad():
            want = served.model.score_all(torch.arange(len(users))).numpy()
        finite = np.isfinite(want)  # serving masks the user's own items
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-6)
        rows = sorted(held_out)
        assert np.ptp(got[rows], axis=1).min() > 0, family  # not a constant (empty) row


def test_sequence_pyfunc_lists_equal_the_served_models(materialized) -> None:
    # the registered next-item pyfunc, given each user's train-split rows as a session,
    # returns what the served model ranks for that user, rated items left out
    from recsys_pipeline.serving import lake_models as lm

    lake, _, mlflow_resource = materialized
    train = lm.load_split(lake, "train").to_pandas()
    frame = train[["user_id", "item_id", "timestamp"]]
    for family in ("gru4rec", "sasrec", "cooccurrence"):
        served = lm.resolve_model(lake, f"{family}_model")
        with mlflow_resource.activated():
            pyfunc = mlflow.pyfunc.load_model(f"models:/recsys-{family}@champion")
            got = pyfunc.predict(frame, params={"k": 5})
        users = served.maps.users.column("user_id").to_numpy()
        items = served.maps.items.column("item_id").to_numpy()
        with torch.no_grad():
            scores = served.model.score_all(torch.arange(len(users))).numpy()
        rated = train.groupby("user_id")["item_id"].apply(set)
        checked = 0
        for u, user in enumerate(users):
            mine = got[got.user_id == user]
            row = scores[u].copy()
            row[np.isin(items, list(rated.get(user, set())))] = -np.inf
            want = np.sort(row[np.isfinite(row)])[::-1][:5]
            if not len(want):
                assert mine.empty
                continue
            np.testing.assert_allclose(mine.score.to_numpy(), want, rtol=1e-5, atol=1e-6)
            column = {int(i): c for c, i in enumerate(items)}
            listed = row[[column[int(i)] for i in mine.item_id]]
            np.testing.assert_allclose(mine.score.to_numpy(), listed, rtol=1e-5, atol=1e-6)
            checked += 1
        assert checked >= len(users) - 2, family


def test_two_tower_asset_takes_recent_items_and_drops_item_features(materialized,
                                                                    tmp_path) -> None:
    """The asset's config reaches the core options: the user tower's recent items (each
    user's last n_recent train-split items by time), and an item tower without genres or
    year (use_genres: false, year_bucket_width: 0)."""
    import shutil

    from recsys_pipeline.data.order import timestamps
    from recsys_pipeline.model_io import build_train_resources
    from recsys_pipeline.models.two_tower import recent_items
    from recsys_pipeline.resources import build_resources

    lake = tmp_path / "lake"
    shutil.copytree(materialized[0], lake)
    root = str(lake)
    resources = {**build_resources(root), **build_train_resources(root),
                 **ranking_resources(root)}
    asset = next(a for a in ranking_assets
                 if dg.AssetKey(["models", "two_tower_model"]) in a.keys)
    result = dg.materialize(
        [*ingest_assets, *prepare_assets, *ranking_assets],
        selection=dg.AssetSelection.assets(asset), resources=resources,
        run_config=dg.RunConfig({"models__two_tower_model": {"config": {
            **SMALL, "n_recent": 3, "use_genres": False, "year_bucket_width": 0}}}))
    assert result.success
    model = load_ranking_model(lake / "models" / "two_tower_model")
    assert model.config.n_recent == 3 and model.n_genres == 0 and model.n_year_buckets == 0
    train = read_parquet(lake / "prepared" / "splits" / "train.parquet")
    expected = recent_items(train.column("user_idx").to_numpy(),
                            train.column("item_idx").to_numpy(), timestamps(train),
                            model.n_users, model.n_items, 3)
    assert np.array_equal(model.user_recent.numpy(), expected)
    assert (expected < model.n_items).any()  # real items, not only padding


@pytest.mark.parametrize("width", [-1, -10])
def test_two_tower_negative_year_bucket_width_names_the_key(width: int) -> None:
    from recsys_pipeline.assets.ranking_configs import TwoTowerModelConfig

    with pytest.raises(ValueError, match=f"year_bucket_width={width} must be >= 0"):
        TwoTowerModelConfig(year_bucket_width=width).to_core()
