"""Jobs select assets by group; later stages extend ``full_pipeline_job`` by adding groups."""

import dagster as dg

from recsys_pipeline.assets.catalog import ON_PURPOSE_GROUPS
from recsys_pipeline.assets.evaluate import GROUP as EVALUATE
from recsys_pipeline.assets.ingest import GROUP as INGEST
from recsys_pipeline.assets.prepare import GROUP as PREPARE
from recsys_pipeline.assets.project import project_job
from recsys_pipeline.assets.ranking_configs import RANKING_PRESETS
from recsys_pipeline.assets.train import GROUP as TRAIN
from recsys_pipeline.assets.train import TRAIN_PRESETS
from recsys_pipeline.assets.tune import tune_job

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups(INGEST),
    description="Read the MovieLens release into the clean Parquet lake, with its checks.",
)

prepare_job = dg.define_asset_job(
    "prepare_job",
    selection=dg.AssetSelection.groups(PREPARE),
    description="Filter, encode, split, and build session sequences and sparse user vectors "
                "from the clean lake, with the split checks.",
)

train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.groups(TRAIN, EVALUATE),
    description="Train every model (one MLflow run each) and compare them in a leaderboard.",
)

train_full_job = dg.define_asset_job(
    "train_full_job",
    selection=dg.AssetSelection.groups(TRAIN, EVALUATE),
    config={"ops": {**TRAIN_PRESETS["full"]["ops"], **RANKING_PRESETS["full"]["ops"]}},
    description="train_job with the 'full' presets: more epochs, patience 5, bigger models; "
                "the ranking models with the settings chosen in bench/ranking_bench.py.",
)

serve_job = dg.define_asset_job(
    "serve_job",
    selection=dg.AssetSelection.groups("serve"),
    description="Precompute every user's top-K recommendations from a trained model.",
)

full_pipeline_job = dg.define_asset_job(
    "full_pipeline_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(*ON_PURPOSE_GROUPS),
    description="Every asset, raw files to the last stage, with every check (tuning and the "
                "embedding projection are tune_job's and project_job's: started on purpose, "
                "not on every retrain).",
)

all_jobs = [ingest_job, prepare_job, train_job, train_full_job, serve_job, full_pipeline_job,
            tune_job, project_job]
