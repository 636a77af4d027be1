"""The ranking side of the code location, for ``definitions.py``: ``ranking_assets``,
``ranking_checks`` and ``ranking_resources`` (the model IO manager the ranking models use)."""

from recsys_pipeline.assets.evaluate_ranking import ranking_evaluate_assets
from recsys_pipeline.assets.ranking_data import ranking_data_assets
from recsys_pipeline.assets.train import no_nan_weights_check
from recsys_pipeline.assets.train_ranking import MODEL_IO, ranking_model_assets
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking_ranking import RankingModelIOManager


def ranking_resources(lake_root: str) -> dict[str, object]:
    """Resources the ranking assets need beyond ``build_resources`` + ``build_train_resources``."""
    return {MODEL_IO: RankingModelIOManager(lake=LakeResource(root=lake_root))}


ranking_assets = [*ranking_data_assets, *ranking_model_assets, *ranking_evaluate_assets]
ranking_checks = [no_nan_weights_check(asset) for asset in ranking_model_assets]
