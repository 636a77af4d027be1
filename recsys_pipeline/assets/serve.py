"""Serve stage: answers precomputed for every user from a trained model in the lake.

``serve/user_recommendations`` holds each user's top-K unrated movies (original ids) from the
model folder named in its config, by default the same model as ``recsys-pipeline recommend``:
the MLflow champion that ranks best (core: ``serving.lake_models.lake_top_k``), as Parquet
with a DuckDB view ``serve_user_recommendations``. Users of the current data that the model
was trained without (a retrain the champion gate kept out) are folded in from their lake
ratings, as ``recommend`` does (metadata ``folded_in_users``).
"""

import dagster as dg
import pyarrow as pa

from recsys_pipeline import schema as S
from recsys_pipeline.assets.prepare import PREFIX as PREPARED
from recsys_pipeline.assets.train import model_assets
from recsys_pipeline.assets.train_ranking import ranking_model_assets
from recsys_pipeline.metadata import table_metadata
from recsys_pipeline.mlflow_resource import MlflowResource
from recsys_pipeline.model_io import DeviceResource
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.serving.lake_models import CHOSEN_BY, DEFAULT_MODEL, lake_top_k

GROUP = "serve"


class UserRecommendationsConfig(dg.Config):
    """Which model ranks, and how long each list is."""

    # a model folder under <lake>/models: a rating model (mf_model, bias_model, neumf_model,
    # ...) or a ranking model (ease_model, multvae_model, autoencoder_model, two_tower_model,
    # gru4rec_model, sasrec_model, cooccurrence_model); "mf" means mf_model. "" = the MLflow
    # champion with the best validation NDCG@10 on the per-user split (the model
    # `recsys-pipeline recommend` serves: its run's own weights), else mf_model
    model: str = ""
    # items per user (fewer for a user with fewer unrated items)
    k: int = 10


@dg.asset(key_prefix=GROUP, group_name=GROUP, kinds={"pytorch", "parquet"},
          deps=[*model_assets, *ranking_model_assets, dg.AssetKey(["clean", "ratings"]),
                *(dg.AssetKey([PREPARED, name]) for name in (
                    "user_map", "item_map", "strong_generalization_items",
                    "strong_generalization_matrix", "session_sequences"))])
def user_recommendations(context: dg.AssetExecutionContext, config: UserRecommendationsConfig,
                         lake: LakeResource, device: DeviceResource,
                         mlflow: MlflowResource) -> pa.Table:
    """Every user's top-K movies among those they have not rated (any rating in
    ``clean/ratings``, held-out ones too): user_id, rank, item_id, score. The model is the
    configured one, else the champion that ranks best, else ``mf_model``."""
    served, table = lake_top_k(lake.path(), config.model, config.k, device.torch_device(),
                               tracking_uri=mlflow.resolved_tracking_uri())
    if config.model:
        chosen = "configured"
    elif served.source.startswith("mlflow run"):
        chosen = CHOSEN_BY["ranking"]
    else:
        chosen = f"no champion with that metric in MLflow: {DEFAULT_MODEL}"
    context.log.info("serving %s (%s) from %s: %s", served.name, served.model.family,
                     served.source, chosen)
    folded = len(set(table.column(S.USER_ID).to_pylist())
                 - set(served.maps.users.column(S.USER_ID).to_pylist()))
    if folded:
        context.log.info("%d user(s) the model was trained without folded in from their lake "
                         "ratings", folded)
    context.add_output_metadata({**table_metadata(table), "model": served.name,
                                 "family": served.model.family, "k": config.k,
                                 "model_source": served.source, "chosen": chosen,
                                 "folded_in_users": folded})
    return table


serve_assets = [user_recommendations]
