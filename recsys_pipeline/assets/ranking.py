"""The ranking side of the code location, for ``definitions.py``: ``ranking_assets``,
``ranking_checks`` and ``ranking_resources`` (the model IO manager the ranking models use)."""

import dagster as dg
from torch import nn

from recsys_pipeline.assets.evaluate_ranking import ranking_evaluate_assets
from recsys_pipeline.assets.ranking_data import ranking_data_assets
from recsys_pipeline.assets.train_ranking import MODEL_IO, ranking_model_assets
from recsys_pipeline.data.validate import Finding
from recsys_pipeline.metadata import findings_result
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.tracking_ranking import RankingModelIOManager
from recsys_pipeline.training.experiment import non_finite_parameters


def _no_nan_weights(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="no_nan_weights", blocking=True,
                    description="Every weight and buffer of the stored model is finite.")
    def _check(model: nn.Module) -> dg.AssetCheckResult:
        bad = non_finite_parameters(model)
        findings = [Finding("no_nan_weights", n, f"tensor {name!r} holds {n} NaN/inf value(s)",
                            [{"tensor": name, "non_finite": n}]) for name, n in bad.items()]
        return findings_result(findings, tensors=len(model.state_dict()))

    return _check


def ranking_resources(lake_root: str) -> dict[str, object]:
    """Resources the ranking assets need beyond ``build_resources`` + ``build_train_resources``."""
    return {MODEL_IO: RankingModelIOManager(lake=LakeResource(root=lake_root))}


ranking_assets = [*ranking_data_assets, *ranking_model_assets, *ranking_evaluate_assets]
ranking_checks = [_no_nan_weights(asset) for asset in ranking_model_assets]
