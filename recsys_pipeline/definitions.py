"""The code location: every asset, check, job, schedule, sensor and resource of the project."""

import dagster as dg

from recsys_pipeline.assets.catalog import ALL_ASSETS
from recsys_pipeline.assets.ranking import ranking_checks, ranking_resources
from recsys_pipeline.assets.train import no_nan_weights_check, train_checks
from recsys_pipeline.assets.tune import tune_assets
from recsys_pipeline.checks import ingest_checks, prepare_checks
from recsys_pipeline.jobs import all_jobs
from recsys_pipeline.model_io import build_train_resources
from recsys_pipeline.resources import DEFAULT_LAKE_ROOT, build_resources
from recsys_pipeline.schedules import all_schedules
from recsys_pipeline.sensors import all_sensors

all_assets = ALL_ASSETS
all_checks = [*ingest_checks, *prepare_checks, *train_checks, *ranking_checks,
              *(no_nan_weights_check(asset) for asset in tune_assets)]

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=all_jobs,
    schedules=all_schedules,
    sensors=all_sensors,
    resources={**build_resources(DEFAULT_LAKE_ROOT), **build_train_resources(DEFAULT_LAKE_ROOT),
               **ranking_resources(DEFAULT_LAKE_ROOT)},
    # In-process: steps share one Python process (no per-step interpreter start-up, one
    # DuckDB writer at a time); the heavy work inside a step is multi-threaded anyway.
    executor=dg.in_process_executor,
)
