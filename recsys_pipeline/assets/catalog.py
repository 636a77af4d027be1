"""Every asset definition of the project in one list, and which of them a retrain runs.

``definitions`` registers :data:`ALL_ASSETS`; ``jobs.full_pipeline_job`` leaves out the
groups in :data:`ON_PURPOSE_GROUPS`; the retrain schedule and sensor read each op's last
settings through :func:`pipeline_assets`. One list, so a new asset reaches all three.
"""

import dagster as dg

from recsys_pipeline.assets.evaluate import evaluate_assets
from recsys_pipeline.assets.ingest import ingest_assets
from recsys_pipeline.assets.prepare import prepare_assets
from recsys_pipeline.assets.project import GROUP as PROJECT
from recsys_pipeline.assets.project import project_assets
from recsys_pipeline.assets.ranking import ranking_assets
from recsys_pipeline.assets.serve import serve_assets
from recsys_pipeline.assets.train import train_assets
from recsys_pipeline.assets.tune import GROUP as TUNE
from recsys_pipeline.assets.tune import tune_assets

ALL_ASSETS: list[dg.AssetsDefinition] = [
    *ingest_assets, *prepare_assets, *train_assets, *ranking_assets, *evaluate_assets,
    *serve_assets, *tune_assets, *project_assets]
# started on purpose (tune_job, project_job), never by a retrain
ON_PURPOSE_GROUPS = (TUNE, PROJECT)


def pipeline_assets() -> list[dg.AssetsDefinition]:
    """The assets ``full_pipeline_job`` materializes: all but :data:`ON_PURPOSE_GROUPS`."""
    return [a for a in ALL_ASSETS
            if not set(a.group_names_by_key.values()) & set(ON_PURPOSE_GROUPS)]
