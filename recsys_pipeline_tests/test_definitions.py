"""The code location loads, every job/schedule/check resolves, and the full pipeline runs."""

from __future__ import annotations

import dagster as dg

from recsys_pipeline.data.lake import read_parquet
from recsys_pipeline.definitions import all_assets, all_checks, defs
from recsys_pipeline.jobs import full_pipeline_job


def test_definitions_load_and_resolve():
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {
        "ingest_job", "prepare_job", "train_job", "train_full_job", "serve_job",
        "full_pipeline_job", "tune_job", "project_job"}
    schedule = defs.get_schedule_def("retrain_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "full_pipeline_job"
    sensor = defs.get_sensor_def("new_ratings_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == "full_pipeline_job"
    check_keys = {k.name for c in all_checks for k in c.check_keys}
    assert {"ratings_schema", "no_null_ids", "ratings_on_scale", "unique_user_item",
            "timestamps_in_range", "rated_items_in_movies"} <= check_keys
    # the retrain keeps each op's last settings: it reads them for exactly the job's assets
    from recsys_pipeline.schedules import _pipeline_ops

    job_keys = set(defs.resolve_job_def("full_pipeline_job").asset_layer.selected_asset_keys)
    assert {k for keys in _pipeline_ops().values() for k in keys} == job_keys
    assert not {dg.AssetKey(["models", "tuned_model"]),
                dg.AssetKey(["reports", "item_projection"])} & job_keys  # started on purpose
    graph = repo.asset_graph
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", f"{key} has no group"
        assert node.description, f"{key} has no description"


def test_full_pipeline_job_end_to_end(tmp_lake, lake_resources, tiny_release):
    job = dg.define_asset_job("full", selection=full_pipeline_job.selection)
    test_defs = dg.Definitions(assets=all_assets, asset_checks=all_checks, jobs=[job],
                               resources=lake_resources, executor=dg.in_process_executor)
    run_config = {"ops": {"raw__movielens_release": {"config": {"path": str(tiny_release)}}}}
    result = test_defs.resolve_job_def("full").execute_in_process(
        run_config=run_config, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert read_parquet(tmp_lake / "clean" / "ratings.parquet").num_rows == 30 * 25
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    leaderboard = read_parquet(tmp_lake / "reports" / "model_comparison.parquet")
    assert sorted(leaderboard["model"].to_pylist()) == sorted(
        [f"{m}_model" for m in ("bias", "popularity", "mf", "mlp", "neumf", "deepfm",
                                     "autoencoder_rating")])
    assert (tmp_lake / "mlflow" / "mlflow.db").is_file()
    ranking = read_parquet(tmp_lake / "reports" / "ranking_comparison.parquet")
    assert sorted(ranking["model"].to_pylist()) == sorted(
        [*(f"{m}_model" for m in ("autoencoder", "multvae", "ease", "gru4rec", "sasrec",
                                  "cooccurrence", "two_tower")), "popularity (baseline)"])
    top = read_parquet(tmp_lake / "serve" / "user_recommendations.parquet")
    assert top.num_rows == 30 * 10 and top.column_names == ["user_id", "rank", "item_id", "score"]
