"""A lake built by the whole pipeline on the tiny synthetic release, for module-scoped fixtures.

Tests of what reads a finished lake (the serving CLI, the serve assets) build it once per
module: about 25 s on a CPU for six models on 30 users × 40 items.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from recsys_pipeline.assets.ranking import ranking_resources
from recsys_pipeline.definitions import all_assets, all_checks
from recsys_pipeline.jobs import full_pipeline_job
from recsys_pipeline.model_io import build_train_resources
from recsys_pipeline.resources import LakeResource, build_resources
from recsys_pipeline.tracking import MlflowResource
from recsys_pipeline_tests.conftest import write_tiny_release

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def build_pipeline_lake(lake: Path, extra_assets: Sequence[object] = (),
                        run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    """Materialize every asset (plus ``extra_assets``) into ``lake`` from a tiny release in
    ``lake/raw/tiny``; MLflow goes to the lake's own SQLite store."""
    release = write_tiny_release(lake / "raw" / "tiny")
    saved = {k: os.environ.pop(k, None) for k in MLFLOW_ENV}
    try:
        resources = {**build_resources(str(lake)), **build_train_resources(str(lake)),
                     **ranking_resources(str(lake))}
        # ONNX export is tested on its own (recsys_pipeline_tests/export); here it would only
        # add seconds per model
        resources["mlflow"] = MlflowResource(lake=LakeResource(root=str(lake)), log_onnx=False)
        selection = full_pipeline_job.selection
        if extra_assets:
            selection = selection | dg.AssetSelection.assets(*extra_assets)
        job = dg.define_asset_job("full", selection=selection)
        defs = dg.Definitions(assets=[*all_assets, *extra_assets], asset_checks=all_checks,
                              jobs=[job], resources=resources,
                              executor=dg.in_process_executor)
        config = {"ops": {"raw__movielens_release": {"config": {"path": str(release)}},
                          **(run_config or {})}}
        result = defs.resolve_job_def("full").execute_in_process(
            run_config=config, instance=dg.DagsterInstance.ephemeral())
    finally:
        for key, value in saved.items():
            if value is not None:
                os.environ[key] = value
    assert result.success
    return result
