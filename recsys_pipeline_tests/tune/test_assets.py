"""``models/tuned_model`` materialized on a tiny prepared lake: MLflow runs, plots, best config,
registered model; and the CLI's ``tune`` command on the same kind of lake."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from recsys_pipeline.assets.ingest import ingest_assets
from recsys_pipeline.assets.prepare import prepare_assets
from recsys_pipeline.assets.tune import tune_assets, tune_job, tuned_model
from recsys_pipeline.cli_tune import add_parser, root_cause
from recsys_pipeline.data.raw_watch import ingested_release_name
from recsys_pipeline.model_io import build_train_resources
from recsys_pipeline.models.base import load_model
from recsys_pipeline.models.mf import MFModel
from recsys_pipeline.resources import build_resources
from recsys_pipeline.tracking import DEFAULT_EXPERIMENT, TAG_DAGSTER_RUN, TAG_FAMILY
from recsys_pipeline.tuning import SearchSpace

NODE = "models__tuned_model"
TINY = {"n_trials": 2, "epochs": 1, "batch_size": 128, "embedding_dims": [4, 8],
        "hidden_choices": [[8]], "tpe_startup_trials": 1}


def _materialize(lake: Path, config: dict) -> dg.ExecuteInProcessResult:
    resources = {**build_resources(str(lake)), **build_train_resources(str(lake))}
    return dg.materialize([*ingest_assets, *prepare_assets, *tune_assets],
                          selection=dg.AssetSelection.assets(tuned_model), resources=resources,
                          run_config=dg.RunConfig({NODE: {"config": config}}),
                          raise_on_error=False)


def _runs(lake: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{lake / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id])


def test_tuned_model_writes_parent_and_nested_trial_runs(lake: Path) -> None:
    result = _materialize(lake, TINY)
    assert result.success
    client, runs = _runs(lake)
    parents = [r for r in runs if r.data.tags.get("tune.role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    parent_id = parent.info.run_id
    trials = [r for r in runs if r.data.tags.get("tune.role") == "trial"]
    assert sorted(r.data.tags["tune.trial"] for r in trials) == ["0", "1"]
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == parent_id
        assert trial.data.tags["tune.state"] == "COMPLETE"
        assert {"lr", "embedding_dim", "l2"} <= set(trial.data.params)
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "valid_rmse")] \
            == [1]
        assert TAG_FAMILY not in trial.data.tags  # never a leaderboard row
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[TAG_FAMILY] == "mf"
    assert parent.data.tags[TAG_DAGSTER_RUN] == result.run_id
    assert parent.data.metrics["n_trials_complete"] == 2.0
    best_value = min(t.data.metrics["best_valid_rmse"] for t in trials)
    assert parent.data.metrics["best_valid_rmse"] == pytest.approx(best_value)
    artifacts = {a.path for a in client.list_artifacts(parent_id, "plots")}
    assert artifacts == {"plots/optimization_history.png", "plots/param_importances.png"}

    final_id = parent.data.tags["tune.final_run_id"]
    final = client.get_run(final_id)
    assert final.data.tags["mlflow.parentRunId"] == parent_id
    assert final.data.tags["tune.role"] == "final"
    # the release the champion gate compares across retrains (was missing on tuned runs)
    release = ingested_release_name(lake / "raw")
    assert release and final.data.tags["data.release"] == release
    assert client.get_model_version("recsys-mf", "1").tags["data.release"] == release
    assert "test_rmse" in final.data.metrics
    assert parent.data.metrics["test_rmse"] == final.data.metrics["test_rmse"]
    versions = client.search_model_versions("name = 'recsys-mf'")
    assert [v.run_id for v in versions] == [final_id]
    assert client.get_model_version_by_alias("recsys-mf", "champion").run_id == final_id

    best = json.loads((lake / "tuning" / "mf" / "best_config.json").read_text())
    assert best["mlflow_parent_run_id"] == parent_id
    assert best["best_valid_rmse"] == pytest.approx(best_value)
    assert best["model_config"]["n_factors"] == best["best_params"]["embedding_dim"] in (4, 8)
    assert not list((lake / "tuning" / "mf").glob(".*"))  # no temp file left behind

    model = load_model(lake / "models" / "tuned_model")
    assert isinstance(model, MFModel) and model.config.n_factors == best["model_config"][
        "n_factors"]
    (mat,) = result.asset_materializations_for_node(NODE)
    meta = mat.metadata
    assert meta["mlflow_parent_run_id"].value == parent_id
    assert meta["trials_complete"].value == 2 and meta["trials_pruned"].value == 0
    assert "data:image/png;base64," in meta["optimization_history"].value
    assert "data:image/png;base64," in meta["param_importances"].value
    assert "embedding_dim" in meta["best_params"].value


def test_bad_family_fails_the_asset_clearly(lake: Path) -> None:
    result = _materialize(lake, {**TINY, "model": "bias"})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "'bias' cannot be tuned" in root_cause(failure.step_failure_data.error)
    assert not (lake / "tuning").exists()


def test_config_defaults_match_the_core_space() -> None:
    from recsys_pipeline.assets.tune import TunedModelConfig

    assert TunedModelConfig().to_space() == SearchSpace()
    assert tune_job.name == "tune_job"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys-pipeline")
    parser.add_argument("--lake")
    add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["tune", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--trials", "--timeout", "--seed", "--epochs", "Optuna"):
        assert flag in out


def test_cli_rejects_bad_flags(lake: Path) -> None:
    for argv, message in ((["tune", "--model", "popularity"], "closed form"),
                          (["tune", "--trials", "0"], "--trials 0"),
                          (["tune", "--timeout", "inf"], "--timeout inf must be a finite"),
                          (["tune", "--timeout", "nan"], "--timeout nan must be a finite")):
        args = _parser().parse_args(["--lake", str(lake), *argv])
        with pytest.raises(ValueError, match=message):
            args.func(args)
    from recsys_pipeline.cli_tune import run_config

    args = _parser().parse_args(["--lake", str(lake), "tune", "--model", "mlp_model"])
    assert run_config(args)["ops"][NODE]["config"]["model"] == "mlp"  # as other commands
    args = _parser().parse_args(["--lake", str(lake / "nowhere"), "tune"])
    with pytest.raises(FileNotFoundError, match="prepare_job"):
        args.func(args)


def test_cli_tune_prints_the_summary(lake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["--lake", str(lake), "tune", "--model", "mlp", "--trials",
                                 "2", "--epochs", "1", "--seed", "3"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    best = json.loads((lake / "tuning" / "mlp" / "best_config.json").read_text())
    assert "tuned mlp: 2 trials complete, 0 pruned, 0 failed" in out
    assert f"MLflow parent run {best['mlflow_parent_run_id']}" in out
    assert f"best valid RMSE {best['best_valid_rmse']:.4f}" in out
    assert "test RMSE" in out and "mlflow ui --backend-store-uri sqlite:///" in out
    assert str(lake / "tuning" / "mlp" / "best_config.json") in out
    assert best["settings"]["seed"] == 3 and best["family"] == "mlp"


def test_each_tuned_family_keeps_its_leaderboard_row(lake: Path) -> None:
    # tuning MLP after MF: models/tuned_model holds the MLP, but the leaderboard still lists
    # the tuned MF beside it (one row per asset and family)
    from recsys_pipeline.data.lake import file_sha256

    assert _materialize(lake, TINY).success
    assert _materialize(lake, {**TINY, "model": "mlp"}).success
    tracker = build_train_resources(str(lake))["mlflow"]
    sha = file_sha256(lake / "prepared" / "splits" / "train.parquet")
    rows = [r for r in tracker.latest_runs(sha)
            if r.data.tags.get("dagster.asset_key") == "models/tuned_model"]
    assert sorted(r.data.tags[TAG_FAMILY] for r in rows) == ["mf", "mlp"]
    assert all(r.data.tags["tune.role"] == "final" for r in rows)  # not the parents


def test_an_interrupted_trial_is_not_left_looking_running(tracker) -> None:
    # Ctrl-C inside a trial: its nested run ends FAILED with tune.state FAIL and the reason,
    # not tune.state RUNNING
    import logging

    from recsys_pipeline.tracking_tune import TAG_STATE, _trial_scope
    from recsys_pipeline.tuning.study import TrialOutcome

    outcome = TrialOutcome(number=0, params={"lr": 0.01})
    experiment_id = tracker.experiment_id()
    run_ids: dict[int, str] = {}
    with tracker.start_run("parent", {}):
        scope = _trial_scope("t", logging.getLogger("t"), experiment_id, {}, run_ids)
        with pytest.raises(KeyboardInterrupt), scope(outcome):
            raise KeyboardInterrupt
    trial = tracker.client().get_run(run_ids[0])
    assert trial.data.tags[TAG_STATE] == "FAIL" and outcome.state == "FAIL"
    assert trial.data.tags["tune.error"] == "interrupted: KeyboardInterrupt"
    assert trial.info.status == "FAILED"


def test_a_tuning_cut_short_resumes_its_study(lake: Path, monkeypatch) -> None:
    # the study lives in <lake>/tuning/<family>/study-<hash>.db while it runs: a tuning that
    # died after trial 0 resumes, re-running neither trial 0 nor more than n_trials in all,
    # and the file goes once the tuned model is trained
    from recsys_pipeline.tuning import study as study_module

    real_fit, calls = study_module.fit, []

    def fit_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed during trial 1")
        return real_fit(*args, **kwargs)

    config = {**TINY, "n_trials": 3}
    monkeypatch.setattr(study_module, "fit", fit_then_die)
    assert not _materialize(lake, config).success
    [left] = (lake / "tuning" / "mf").glob("study-*.db")
    monkeypatch.setattr(study_module, "fit", real_fit)
    result = _materialize(lake, config)
    assert result.success
    client, runs = _runs(lake)
    parent = next(r for r in runs if r.data.tags.get("tune.role") == "parent"
                  and r.data.tags.get("dagster.run_id") == result.run_id)
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
              and r.data.tags.get("tune.role") == "trial"]
    # trial 0 is reused; trial 1 died, so two new trials (2 and 3) make three in all
    assert sorted(int(r.data.tags["tune.trial"]) for r in trials) == [2, 3]
    assert parent.data.metrics["n_trials_complete"] == 3.0
    assert not left.exists()
