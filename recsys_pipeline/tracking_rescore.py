"""Re-scoring a family's champion on a challenger's validation data (MLflow side).

When a retrain ran on changed data, the champion gate (``champion.gate``) compares the
champion and the challenger on the challenger's validation data through original MovieLens
ids. This module loads the champion from its run and builds the gate's
:data:`~recsys_pipeline.champion.Rescorer` per protocol; the scoring itself is
``evaluation.rescore``:

* fold-in models: the champion from ``original_ids_model/``; held-out validation users it
  never trained on, over the items both know (``rescore_fold_in``);
* next-item models: the champion from ``model/`` and ``token_items/`` (the original item id
  of each token, logged by :func:`log_token_items`); the validation sequences over the items
  both know (``rescore_next_item``);
* two-tower and popularity: the champion from ``original_ids_model/``; the validation
  ratings of the users both know over the items both know (``rescore_topk``).

Next-item, two-tower and popularity champions are re-scored only when both runs' split
(``data.split.method``) is temporal: under a random split the champion may have trained on the
challenger's validation items.
"""

import dataclasses
import tempfile
from pathlib import Path

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from mlflow.entities.model_registry import ModelVersion
from torch import nn

from recsys_pipeline import schema
from recsys_pipeline.champion import Rescorer
from recsys_pipeline.evaluation.rescore import (
    rescore_fold_in,
    rescore_next_item,
    rescore_topk,
)
from recsys_pipeline.models.ranking_base import FoldInModel, SequenceModel, load_ranking_model
from recsys_pipeline.tracking_export import PYFUNC_DIR, OriginalIdsModel
from recsys_pipeline.training.device import model_device

RUN_MODEL_DIR = "model"  # a ranking run's model artifacts (tracking_ranking logs them)
TOKEN_ITEMS_DIR, TOKEN_ITEMS_FILE = "token_items", "item_ids.parquet"
PARAM_SPLIT_METHOD = "data.split.method"
# splits under which a user's validation items are newer than all his training items, and
# stay so when ratings are added: a champion never trained on a later validation item
TEMPORAL_SPLITS = ("user_temporal", "global_temporal")


def _champion_pyfunc(champion: ModelVersion, tracking_uri: str) -> OriginalIdsModel:
    """The champion's ``original_ids_model/`` pyfunc (weights and id lists), as logged."""
    with tempfile.TemporaryDirectory() as tmp:  # load_context reads every file at once
        folder = mlflow.artifacts.download_artifacts(
            run_id=champion.run_id, artifact_path=PYFUNC_DIR, dst_path=tmp,
            tracking_uri=tracking_uri)
        return mlflow.pyfunc.load_model(folder).unwrap_python_model()


def _check_temporal(challenger_method: str, champion: ModelVersion, tracking_uri: str) -> None:
    """ValueError unless both runs' splits are in ``TEMPORAL_SPLITS``."""
    run = mlflow.MlflowClient(tracking_uri).get_run(champion.run_id)
    methods = {"challenger": challenger_method,
               "champion": run.data.params.get(PARAM_SPLIT_METHOD, "unknown")}
    for who, method in methods.items():
        if method not in TEMPORAL_SPLITS:
            raise ValueError(f"the {who}'s split is {method!r}, not one of {TEMPORAL_SPLITS}: "
                             "the champion may have trained on the validation targets")


def fold_in_rescorer(model: FoldInModel, fold_in: sp.spmatrix, heldout: sp.spmatrix,
                     user_ids: np.ndarray, item_ids: np.ndarray, tracking_uri: str) -> Rescorer:
    """A :data:`~recsys_pipeline.champion.Rescorer` for fold-in (strong-generalization) models.

    The champion's weights and id lists come from its run's ``original_ids_model/`` pyfunc
    (loaded as logged, by ``tracking_export.OriginalIdsModel``); both models are scored by
    ``evaluation.rescore.rescore_fold_in`` on the challenger's validation users the champion
    never trained on, over the items both know.

    Args:
        model: The challenger, in memory.
        fold_in: Its validation users' fold-in rows.  # [n_users, n_items] CSR
        heldout: Their held-out rows.  # [n_users, n_items] CSR
        user_ids: Original id of each row.  # [n_users]
        item_ids: Original id of each column.  # [n_items]
        tracking_uri: Where the champion's run lives.
    """
    def rescore(champion: ModelVersion, metric: str) -> tuple[float, float, int, int]:
        pyfunc = _champion_pyfunc(champion, tracking_uri)
        old = pyfunc.model
        if not isinstance(old, FoldInModel):
            raise ValueError(f"the champion is a {type(old).__name__}, not a fold-in model")
        return rescore_fold_in(old.to(model_device(model)).eval(), pyfunc.user_ids,
                               pyfunc.item_ids, model, user_ids, item_ids, fold_in, heldout,
                               metric)

    return rescore


@dataclasses.dataclass(frozen=True)
class NextItemValidation:
    """A sequence model's validation rows, as the champion gate re-scores them.

    Attributes:
        tokens: Left-padded validation inputs.  # [N, L]
        targets: Their target tokens.  # [N]
        item_ids: Original item id of each token ``1..n_vocab``.  # [n_vocab]
        split_method: The split the sequences come from (``SplitConfig.method``).
    """

    tokens: np.ndarray
    targets: np.ndarray
    item_ids: np.ndarray
    split_method: str


def next_item_rescorer(model: SequenceModel, validation: NextItemValidation,
                       tracking_uri: str) -> Rescorer:
    """A :data:`~recsys_pipeline.champion.Rescorer` for next-item (sequence) models.

    The champion's weights come from its run's ``model/`` artifacts, its token ids from
    ``token_items/``; both models are scored by ``evaluation.rescore.rescore_next_item`` on
    the challenger's validation sequences over the items both know. Both runs' splits must be
    temporal (``TEMPORAL_SPLITS``): under a random split the champion may have trained on the
    challenger's validation targets, and re-scoring raises ``ValueError`` saying so.
    """
    def rescore(champion: ModelVersion, metric: str) -> tuple[float, float, int, int]:
        _check_temporal(validation.split_method, champion, tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            folders = [mlflow.artifacts.download_artifacts(
                run_id=champion.run_id, artifact_path=path, dst_path=tmp,
                tracking_uri=tracking_uri) for path in (RUN_MODEL_DIR, TOKEN_ITEMS_DIR)]
            old = load_ranking_model(folders[0], map_location=model_device(model))
            old_ids = pq.read_table(Path(folders[1]) / TOKEN_ITEMS_FILE).column(
                schema.ITEM_ID).to_numpy()
        if not isinstance(old, SequenceModel):
            raise ValueError(f"the champion is a {type(old).__name__}, not a sequence model")
        return rescore_next_item(old.eval(), old_ids, model.eval(), validation.item_ids,
                                 validation.tokens, validation.targets, metric)

    return rescore


@dataclasses.dataclass(frozen=True)
class TopKValidation:
    """A per-user top-K model's ratings (two-tower, popularity), as the gate re-scores it.

    Attributes:
        train: Training ratings, masked from the ranking.  # [n_users, n_items] CSR
        valid: Validation ratings.  # [n_users, n_items] CSR
        split_method: The split they come from (``SplitConfig.method``).
        threshold: Lowest relevant rating.
    """

    train: sp.spmatrix
    valid: sp.spmatrix
    split_method: str
    threshold: float = 4.0


def topk_rescorer(model: nn.Module, validation: TopKValidation, user_ids: np.ndarray,
                  item_ids: np.ndarray, tracking_uri: str) -> Rescorer:
    """A :data:`~recsys_pipeline.champion.Rescorer` for per-user top-K models (two-tower;
    popularity, from ``tracking.train_and_track``).

    The champion comes from its run's ``original_ids_model/`` pyfunc; both models are
    scored by ``evaluation.rescore.rescore_topk`` on the challenger's validation ratings of
    the users both know, over the items both know. Both splits must be temporal, as for
    :func:`next_item_rescorer` (a random split may have put the champion's training ratings
    into the new validation split).
    """
    def rescore(champion: ModelVersion, metric: str) -> tuple[float, float, int, int]:
        _check_temporal(validation.split_method, champion, tracking_uri)
        pyfunc = _champion_pyfunc(champion, tracking_uri)
        if pyfunc.model.family != model.family:
            raise ValueError(f"the champion is a {pyfunc.model.family} model, not "
                             f"{model.family}")
        return rescore_topk(pyfunc.model.to(model_device(model)).eval(), pyfunc.user_ids,
                            pyfunc.item_ids, model.eval(), user_ids, item_ids,
                            validation.train, validation.valid, metric, validation.threshold)

    return rescore


# what the champion gate re-scores a champion on, per protocol (None: not re-scored)
Validation = tuple[sp.spmatrix, sp.spmatrix] | NextItemValidation | TopKValidation | None


def rescorer(model: nn.Module, validation: Validation, user_ids: np.ndarray | None,
             item_ids: np.ndarray | None, tracking_uri: str) -> Rescorer | None:
    """The re-scorer that fits the model and its validation data, or None."""
    if isinstance(validation, NextItemValidation) and isinstance(model, SequenceModel):
        return next_item_rescorer(model, validation, tracking_uri)
    if user_ids is None or item_ids is None:
        return None  # no original ids (no id tables in the lake): nothing to translate
    if isinstance(validation, TopKValidation):
        return topk_rescorer(model, validation, user_ids, item_ids, tracking_uri)
    if isinstance(validation, tuple) and isinstance(model, FoldInModel):
        return fold_in_rescorer(model, *validation, user_ids, item_ids, tracking_uri)
    return None


def log_token_items(item_ids: np.ndarray) -> None:
    """Log a sequence model's token ids (``token_items/item_ids.parquet``) to the active run."""
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(pa.table({schema.ITEM_ID: pa.array(np.asarray(item_ids), pa.int64())}),
                       Path(tmp) / TOKEN_ITEMS_FILE)
        mlflow.log_artifacts(tmp, TOKEN_ITEMS_DIR)
