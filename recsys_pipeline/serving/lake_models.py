"""Load what serving needs from the lake: a trained model, its id maps, movies, seen items.

A model is picked in one of three ways (:func:`resolve_model`):

* by name: a folder under ``<lake>/models/`` (``mf`` and ``mf_model`` both mean
  ``models/mf_model/``); ranking models too (``ease``, ``sasrec``, ``two_tower``, ...: see
  ``serving.ranking_serving`` for their item spaces and inputs);
* by MLflow run id (rating models only): the model logged in that run, with the run's own
  id maps: its ``original_ids_model/artifacts/model`` folder (``config.json`` +
  ``state_dict.pt``) and ``id_maps/`` (runs logged before the export existed: the
  ``model.pt2`` graph's state dict loaded into a model built from the lake folder of the
  run's asset, with the lake's maps);
* by default: among the families' registered ``champion`` versions, the best one for the
  question, loaded from its run as above, so a challenger the champion gate kept out is never
  served even though its weights sit in the lake folder; else ``mf_model``. For lists of
  movies (``by="ranking"``: recommend, new-user, export, ...) the best ranker: the highest
  ``best_valid_ndcg_at_10`` among the models evaluated on the per-user split (the rating
  models, popularity and two-tower; the fold-in and sequence models are measured on other
  protocols, not comparable). For predicted ratings (``by="rmse"``: check-user) the lowest
  ``best_valid_rmse``. For item embeddings (``by="embeddings"``: similar, project,
  recommend --by-embedding) the best ranker among the families that have them.

Sessions (``next``) get a sequence model from :func:`resolve_session_model`: a lake folder
by name, else the next-item champion with the highest ``best_valid_ndcg_at_10`` on the
session sequences (GRU4Rec, SASRec and co-occurrence share that protocol), loaded from its
run's next-item pyfunc artifacts.

Seen items (never recommended back) are every rating of ``clean/ratings.parquet``, the
user's whole record in the lake (the training split and the held-out valid and test ratings,
plus ratings the filters dropped), translated through original ids into the served model's
index space, so a champion trained on older data serves correctly on the current lake.

mlflow is imported only inside the functions that need it (run ids, champion lookup).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps, load_id_maps
from recsys_pipeline.data.lake import file_sha256, read_parquet
from recsys_pipeline.data.raw_watch import ingested_release_name
from recsys_pipeline.evaluation.rescore import known_pairs
from recsys_pipeline.evaluation.topk import ItemSets
from recsys_pipeline.models.base import CONFIG_FILE, RatingModel, load_model
from recsys_pipeline.models.ranking_base import (
    RANKING_FAMILIES,
    SequenceModel,
    load_ranking_model,
)
from recsys_pipeline.serving.fold_in import FoldedUser, FoldInConfig, fold_in
from recsys_pipeline.serving.lake_store import ensure_relocated, names_store, store_db
from recsys_pipeline.serving.next_items import WIDTH_FILE
from recsys_pipeline.serving.ranking_serving import SequenceServing, load_lake_serving
from recsys_pipeline.serving.recommend import batch_top_k, seen_items, top_k_table
from recsys_pipeline.serving.similar import EMBEDDING_FAMILIES
from recsys_pipeline.serving.tables import USER_TOP_K_SCHEMA

logger = logging.getLogger(__name__)

MODELS_DIR = "models"
PREPARED_DIR = "prepared"
SPLITS_DIR = ("prepared", "splits")
MOVIES_FILE = ("clean", "movies.parquet")
RATINGS_FILE = ("clean", "ratings.parquet")
DEFAULT_MODEL = "mf_model"
MODEL_SUFFIX = "_model"
CHAMPION = "champion"  # the alias champion.gate moves
REGISTERED_PREFIX = "recsys-"
SELECTION_METRIC = "best_valid_rmse"
RANKING_SELECTION_METRIC = "best_valid_ndcg_at_10"
PROTOCOL_TAG = "ranking.protocol"  # tracking_ranking: the ranking model's protocol
PER_USER_PROTOCOL = "per_user_topk"  # the ranking protocol of the rating models' split
NEXT_ITEM_PROTOCOL = "next_item"  # tracking_ranking: the sequence models' protocol
SELECTIONS = ("ranking", "rmse", "embeddings", "next")
# why the default model is the one it is, per selection (the CLI and the serve asset say it)
CHOSEN_BY = {"ranking": "the champion with the best validation NDCG@10 on the per-user split",
             "rmse": "the champion with the best validation RMSE",
             "embeddings": "of the champions with item embeddings, the one with the best "
                           "validation NDCG@10 on the per-user split",
             "next": "the next-item champion with the best validation NDCG@10 on the session "
                     "sequences"}
ASSET_TAG = "dagster.asset_key"  # tracking.TAG_ASSET, e.g. "models/mf_model"
RELEASE_TAG = "data.release"  # champion.TAG_RELEASE: the release a run trained on
FAMILY_TAG = "model.family"  # mlflow_resource.TAG_FAMILY
PT2_FILE = "data/model.pt2"  # where mlflow.pytorch (pt2 format) keeps the graph
PAIR_PREFIX = "model."  # PairScorer holds the rating model as its ``model`` submodule
RUN_MODEL_DIR = "original_ids_model/artifacts/model"  # tracking_export: config + state dict
RUN_MAPS_DIR = "id_maps"  # tracking.train_and_track: user_map / item_map
RUN_PYFUNC_ARTIFACTS = "original_ids_model/artifacts"  # model/, users.parquet, items.parquet
TWO_TOWER = "two_tower"
TRAINED_ON_FILE = "trained_on.json"  # beside config.json: the lake data the model trained on


@dataclass(frozen=True)
class ServingModel:
    """A model ready to serve and where it came from.

    Attributes:
        name: Lake folder name, e.g. ``mf_model``.
        model: The trained model, in eval mode on the CPU.
        maps: The lake's id maps (checked against the model's sizes by every serving call).
        source: A human-readable origin: the lake folder, or ``mlflow run <id>``.
    """

    name: str
    model: RatingModel
    maps: IdMaps
    source: str


def model_folder_name(name: str) -> str:
    """``mf`` -> ``mf_model``; ``mf_model`` and ``models/mf_model`` -> ``mf_model``."""
    name = name.strip().strip("/").split("/")[-1]
    if not name:
        raise ValueError("empty model name")
    return name if name.endswith(MODEL_SUFFIX) else name + MODEL_SUFFIX


def lake_model_names(lake: str | os.PathLike[str]) -> list[str]:
    """Folder names of the models saved under ``<lake>/models/``, sorted."""
    folder = Path(lake) / MODELS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / CONFIG_FILE).is_file())


def load_lake_model(lake: str | os.PathLike[str], name: str) -> RatingModel:
    """The model saved at ``<lake>/models/<name>_model/`` (CPU, eval mode); a ranking model
    comes wrapped for serving (see :func:`load_lake_served`).

    Raises:
        FileNotFoundError: No such folder; the message lists the models the lake has.
    """
    return load_lake_served(lake, name)[0]


def load_lake_served(lake: str | os.PathLike[str], name: str) -> tuple[RatingModel, IdMaps]:
    """``(model, id maps)`` of ``<lake>/models/<name>_model/`` (CPU, eval mode).

    Rating models and two-tower get the lake's maps. Fold-in and sequence models come as
    ``serving.ranking_serving`` wrappers over the lake's users with the item map of their own
    item space (strong-generalization columns, session vocabulary).

    Raises:
        FileNotFoundError: No such folder (the message lists the lake's models) or a lake
            file the model needs.
    """
    folder = Path(lake) / MODELS_DIR / model_folder_name(name)
    if not (folder / CONFIG_FILE).is_file():
        have = ", ".join(lake_model_names(lake)) or "none: materialize the models/* assets"
        raise FileNotFoundError(f"no model at {folder} (the lake has: {have})")
    check_trained_on(lake, folder)
    if json.loads((folder / CONFIG_FILE).read_text()).get("family") in RANKING_FAMILIES:
        model, maps = load_lake_serving(lake, folder, load_maps(lake), load_split(lake, "train"))
        return model.eval(), maps
    return load_model(folder, map_location="cpu").eval(), load_maps(lake)


def lake_data_signature(lake: str | os.PathLike[str]) -> dict[str, str]:
    """What a lake model folder is tied to: the release last ingested and the SHA-256 of the
    id maps it translates ids through (``trained_on.json``, written beside the model)."""
    prepared = Path(lake) / PREPARED_DIR
    maps = {f"{n}_sha256": file_sha256(prepared / f"{n}.parquet") if
            (prepared / f"{n}.parquet").is_file() else "" for n in ("user_map", "item_map")}
    return {"release": ingested_release_name(Path(lake) / "raw"), **maps}


def check_trained_on(lake: str | os.PathLike[str], folder: Path) -> None:
    """Raise ValueError when the lake data changed since the model in ``folder`` was trained
    (another release ingested, or other id maps prepared): its indices would name other
    users and movies. Folders without ``trained_on.json`` (older ones) are not checked."""
    path = folder / TRAINED_ON_FILE
    if not path.is_file():
        return
    then, now = json.loads(path.read_text()), lake_data_signature(lake)
    where = f"{Path(folder).parent.name}/{Path(folder).name}"
    if then.get("release") and now["release"] and then["release"] != now["release"]:
        raise ValueError(f"{where} was trained on {then['release']}, but the lake now holds "
                         f"{now['release']} (raw/movielens_release.json): its ids mean other "
                         "people and movies there; retrain it (dagster job execute -m "
                         "recsys_pipeline.definitions -j full_pipeline_job) before serving it")
    if any(then.get(k) != now[k] for k in ("user_map_sha256", "item_map_sha256")):
        raise ValueError(f"{where} was trained on other prepared data: prepared/user_map or "
                         "item_map changed since (prepare_job ran again, e.g. with other "
                         "filters or new users); retrain it (dagster job execute -m "
                         "recsys_pipeline.definitions -j train_job) or serve the champion "
                         "(leave out --model)")


def load_maps(lake: str | os.PathLike[str]) -> IdMaps:
    """The id maps ``<lake>/prepared/{user_map,item_map}.parquet``."""
    return load_id_maps(Path(lake) / PREPARED_DIR)


def load_movies(lake: str | os.PathLike[str]) -> pa.Table:
    """``<lake>/clean/movies.parquet`` (``schema.MOVIES_SCHEMA``)."""
    return read_parquet(Path(lake).joinpath(*MOVIES_FILE))


def load_split(lake: str | os.PathLike[str], split: str) -> pa.Table:
    """``<lake>/prepared/splits/<split>.parquet`` (train, valid or test)."""
    return read_parquet(Path(lake).joinpath(*SPLITS_DIR, f"{split}.parquet"))


def load_seen(lake: str | os.PathLike[str], maps: IdMaps) -> ItemSets:
    """Every item each user has rated in the lake (``clean/ratings.parquet``: the training
    split, the held-out valid and test ratings and the filtered-out ones), in the index space
    of ``maps`` (through original ids; users or items ``maps`` lacks are left out): never
    recommended back to them."""
    path = Path(lake).joinpath(*RATINGS_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such lake file; materialize clean/ratings")
    ratings = pq.read_table(path, columns=[S.USER_ID, S.ITEM_ID])
    mask, users, items = known_pairs(ratings.column(S.USER_ID).to_numpy(),
                                     ratings.column(S.ITEM_ID).to_numpy(), maps)
    return seen_items(pa.table({S.USER_IDX: users, S.ITEM_IDX: items}), maps.n_users)


def train_support(lake: str | os.PathLike[str], maps: IdMaps) -> np.ndarray:
    """Ratings per item index of ``maps`` in the lake's training split (through original
    ids; items the split lacks count 0).  # [n_items] int64"""
    train = load_split(lake, "train")
    _, _, items = known_pairs(train.column(S.USER_ID).to_numpy(),
                              train.column(S.ITEM_ID).to_numpy(), maps)
    return np.bincount(items, minlength=maps.n_items)


def default_tracking_uri(lake: str | os.PathLike[str], tracking_uri: str | None = None) -> str:
    """The store serving opens: ``tracking_uri`` when given, else ``$MLFLOW_TRACKING_URI`` when
    set, else the lake's ``sqlite:///<lake>/mlflow/mlflow.db`` (the default of
    ``tracking.MlflowResource``). When that is the lake's own store (by default, or named by
    the URI) and the lake was moved or copied, the store's artifact URIs are first pointed into
    this lake (``lake_store.ensure_relocated``)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_db(lake)}"
    if names_store(lake, uri):
        ensure_relocated(lake)
    return uri


def champion_model_name(lake: str | os.PathLike[str], tracking_uri: str | None = None,
                        by: str = "ranking") -> str | None:
    """Lake folder name of the best champion over all families (see the module doc).

    Args:
        lake: The lake folder.
        tracking_uri: The MLflow store (default: :func:`default_tracking_uri`).
        by: ``"ranking"`` (highest validation NDCG@10 on the per-user split), ``"rmse"``
            (lowest validation RMSE) or ``"embeddings"`` (the best ranker among the families
            with item embeddings, for similar items and projections).

    Returns:
        E.g. ``two_tower_model``; None when there is no MLflow store in the lake (and no
        ``$MLFLOW_TRACKING_URI``) or no champion with the metric.

    Raises:
        ValueError: The store exists but cannot be read, or an unknown ``by``.
    """
    found = _best_champion(lake, tracking_uri, by)
    return None if found is None else found[0]


# a few small lookups: an unreachable tracking server fails in seconds instead of after
# MLflow's defaults (7 retries with exponential backoff, 120 s timeout: minutes of silence)
QUICK_MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


QUIET_DOWNLOADS_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@contextlib.contextmanager
def env_defaults(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment for the block, where the user has not set them."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def quick_mlflow_requests() -> contextlib.AbstractContextManager[None]:
    """:data:`QUICK_MLFLOW_ENV` for the block, where the user has not set those variables."""
    return env_defaults(QUICK_MLFLOW_ENV)


@dataclass(frozen=True)
class Champion:
    """One family's registered champion: its lake folder, run and validation metrics
    (NaN where the run has none: ``ndcg`` only for models of the per-user split), and the
    release it was trained on (``""`` when the run does not say)."""

    folder: str
    run_id: str
    rmse: float
    ndcg: float
    release: str = ""
    family: str = ""  # the run's model.family tag (a tuned_model is mf, mlp, ...)
    next_ndcg: float = math.nan  # validation NDCG@10 of a next-item (sequence) model


def _best_champion(lake: str | os.PathLike[str], tracking_uri: str | None, by: str = "ranking"
                   ) -> tuple[str, str] | None:
    """``(lake folder name, run id)`` of the best champion (see :func:`champion_model_name`)."""
    if by not in SELECTIONS:
        raise ValueError(f"by={by!r} must be one of {SELECTIONS}")
    uri = default_tracking_uri(lake, tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    from mlflow.exceptions import MlflowException

    try:
        with quick_mlflow_requests():
            found = _champions(uri)
    except MlflowException as exc:
        raise ValueError(f"cannot read the champions from MLflow at {uri} ({exc}); "
                         "name a model instead") from exc
    ingested = ingested_release_name(Path(lake) / "raw")
    stale = [c for c in found if c.release and ingested and c.release != ingested]
    found = [c for c in found if c not in stale]
    if stale and not found:
        other = ", ".join(sorted({c.release for c in stale}))
        raise ValueError(f"the champions were trained on {other} but the lake holds "
                         f"{ingested} (raw/movielens_release.json): their ids mean other users "
                         "and movies; retrain (dagster job execute -m "
                         "recsys_pipeline.definitions -j full_pipeline_job)")
    if by == "embeddings":  # similar, project, --by-embedding: popularity or EASE cannot
        found = [c for c in found
                 if (c.family or c.folder.removesuffix(MODEL_SUFFIX)) in EMBEDDING_FAMILIES]
    if by == "rmse":
        ranked = sorted((c.rmse, c.folder, c.run_id) for c in found if math.isfinite(c.rmse))
    elif by == "next":
        ranked = sorted((-c.next_ndcg, c.folder, c.run_id) for c in found
                        if math.isfinite(c.next_ndcg))
    else:
        ranked = sorted((-c.ndcg, c.folder, c.run_id) for c in found if math.isfinite(c.ndcg))
    return None if not ranked else (ranked[0][1], ranked[0][2])


def _champions(uri: str) -> list[Champion]:
    """Each family's champion with its run's selection metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri, uri)
    out = []
    for registered in client.search_registered_models(
            filter_string=f"name LIKE '{REGISTERED_PREFIX}%'"):
        version = registered.aliases.get(CHAMPION)
        if version is None:
            continue
        run = client.get_run(client.get_model_version(registered.name, str(version)).run_id)
        metrics, protocol = run.data.metrics, run.data.tags.get(PROTOCOL_TAG)
        per_user = protocol in (None, PER_USER_PROTOCOL)
        out.append(Champion(
            model_folder_name(run.data.tags.get(ASSET_TAG, run.info.run_name or "")),
            run.info.run_id, metrics.get(SELECTION_METRIC, math.nan),
            metrics.get(RANKING_SELECTION_METRIC, math.nan) if per_user else math.nan,
            run.data.tags.get(RELEASE_TAG, ""), run.data.tags.get(FAMILY_TAG, ""),
            metrics.get(RANKING_SELECTION_METRIC, math.nan)
            if protocol == NEXT_ITEM_PROTOCOL else math.nan))
    return out


def load_run_model(lake: str | os.PathLike[str], run_id: str,
                   tracking_uri: str | None = None) -> tuple[str, RatingModel]:
    """``(lake folder name, model)`` logged in MLflow run ``run_id`` (see :func:`load_run`)."""
    name, model, _ = load_run(lake, run_id, tracking_uri)
    return name, model


def load_run(lake: str | os.PathLike[str], run_id: str, tracking_uri: str | None = None
             ) -> tuple[str, RatingModel, IdMaps]:
    """``(lake folder name, model, id maps)`` logged in MLflow run ``run_id`` (see
    :func:`_load_run`), without MLflow's download progress bars."""
    with env_defaults(QUIET_DOWNLOADS_ENV):
        return _load_run(lake, run_id, tracking_uri)


def _load_run(lake: str | os.PathLike[str], run_id: str, tracking_uri: str | None = None
              ) -> tuple[str, RatingModel, IdMaps]:
    """``(lake folder name, model, id maps)`` logged in MLflow run ``run_id``.

    The run's ``original_ids_model/artifacts/model`` folder gives architecture and weights
    (``torch.load(weights_only=True)``) and its ``id_maps/`` the maps. Older runs without it:
    the run's ``dagster.asset_key`` tag names the lake folder whose ``config.json`` gives the
    architecture; the weights come from the run's pt2 graph (``torch.export.load``, no
    pickle) and must match it exactly; the maps are the lake's.

    Raises:
        ValueError: Unknown run, a run without a logged model, or weights of another shape.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = default_tracking_uri(lake, tracking_uri)
    client = MlflowClient(uri, uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ValueError(f"MLflow run {run_id!r} not found in {uri}") from exc
    tag = run.data.tags.get(ASSET_TAG, "")
    family = model_folder_name(tag).removesuffix(MODEL_SUFFIX) if tag else ""
    if family == TWO_TOWER:
        return _load_two_tower_run(lake, run_id, uri, model_folder_name(tag))
    if family in RANKING_FAMILIES:
        raise ValueError(f"MLflow run {run_id} logged the ranking model {model_folder_name(tag)}"
                         f": --run-id serves rating models and two-tower only; serve it by "
                         f"name (--model {model_folder_name(tag)})")
    outputs = run.outputs.model_outputs if run.outputs else []
    if not tag:
        raise ValueError(f"MLflow run {run_id} has no logged model or no {ASSET_TAG} tag")
    name = model_folder_name(tag)
    logged = {a.path for a in client.list_artifacts(run_id, RUN_MODEL_DIR.rsplit("/", 1)[0])}
    has_maps = {a.path for a in client.list_artifacts(run_id, RUN_MAPS_DIR)} >= {
        f"{RUN_MAPS_DIR}/user_map.parquet", f"{RUN_MAPS_DIR}/item_map.parquet"}
    if RUN_MODEL_DIR in logged and has_maps:
        with tempfile.TemporaryDirectory() as tmp:
            folder = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=RUN_MODEL_DIR, dst_path=tmp, tracking_uri=uri)
            model = load_model(folder, map_location="cpu")
            maps = load_id_maps(mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=RUN_MAPS_DIR, dst_path=tmp, tracking_uri=uri))
        if (maps.n_users, maps.n_items) != (model.n_users, model.n_items):
            raise ValueError(f"MLflow run {run_id}: id maps of {maps.n_users} users x "
                             f"{maps.n_items} items, model of {model.n_users} x {model.n_items}")
        return name, model.eval(), maps
    if not outputs:  # the rating autoencoder logs no pt2 graph, only the folder above
        raise ValueError(f"MLflow run {run_id} has no logged model or no {ASSET_TAG} tag")
    model = load_lake_model(lake, name)
    location = client.get_logged_model(outputs[0].model_id).artifact_location
    path = mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/{PT2_FILE}",
                                               tracking_uri=uri)
    state = torch.export.load(path).state_dict
    weights = {k.removeprefix(PAIR_PREFIX): v for k, v in state.items()}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"MLflow run {run_id}: its weights do not fit the architecture of "
                         f"{Path(lake) / MODELS_DIR / name}: {exc}") from exc
    return name, model.eval(), load_maps(lake)


def _load_two_tower_run(lake: str | os.PathLike[str], run_id: str, uri: str, name: str
                        ) -> tuple[str, RatingModel, IdMaps]:
    """A two-tower run's model and id maps, from its ``original_ids_model`` artifacts (the
    state dict, and the original ids of its user and item indices; titles from the lake)."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=RUN_PYFUNC_ARTIFACTS, dst_path=tmp,
                tracking_uri=uri))
        except Exception as exc:  # MLflow raises its own and OSError types for a missing path
            raise ValueError(f"MLflow run {run_id} has no {RUN_PYFUNC_ARTIFACTS}/ to load "
                             f"two-tower from ({exc})") from exc
        model = load_ranking_model(folder / "model", map_location="cpu")
        users = pq.read_table(folder / "users.parquet").column(S.USER_ID).to_numpy()
        items = pq.read_table(folder / "items.parquet").column(S.ITEM_ID).to_numpy()
    movies = load_movies(lake)
    titles = dict(zip(movies.column(S.ITEM_ID).to_pylist(), movies.column(S.TITLE).to_pylist(),
                      strict=True))
    maps = IdMaps(
        pa.table({S.USER_IDX: np.arange(users.size, dtype=np.int32), S.USER_ID: users},
                 schema=S.USER_MAP_SCHEMA),
        pa.table({S.ITEM_IDX: np.arange(items.size, dtype=np.int32), S.ITEM_ID: items,
                  S.TITLE: [titles.get(int(i)) for i in items]}, schema=S.ITEM_MAP_SCHEMA))
    if (maps.n_users, maps.n_items) != (model.n_users, model.n_items):
        raise ValueError(f"MLflow run {run_id}: ids of {maps.n_users} users x {maps.n_items} "
                         f"items, model of {model.n_users} x {model.n_items}")
    return name, model.eval(), maps


def resolve_model(lake: str | os.PathLike[str], name: str | None = None,
                  run_id: str | None = None, tracking_uri: str | None = None,
                  by: str = "ranking") -> ServingModel:
    """The model to serve: by ``name``, by ``run_id``, or the default champion chosen ``by``
    ranking quality or RMSE (see the module doc).

    Raises:
        ValueError: Both ``name`` and ``run_id`` given, or a model that does not fit the maps.
        FileNotFoundError: A missing model folder or id map file.
    """
    if name and run_id:
        raise ValueError("give a model name or an MLflow run id, not both")
    if not name and not run_id:
        champion = _best_champion(lake, tracking_uri, by)
        if champion is not None:
            run_id = champion[1]
    if run_id:
        folder, model, maps = load_run(lake, run_id, tracking_uri)
        source = f"mlflow run {run_id}"
    else:
        folder = model_folder_name(name) if name else DEFAULT_MODEL
        model, maps = load_lake_served(lake, folder)
        source = str(Path(lake) / MODELS_DIR / folder)
    logger.info("serving %s from %s", folder, source)
    return ServingModel(folder, model, maps, source)


@dataclass(frozen=True)
class SessionModel:
    """A next-item (sequence) model ready for ``serving.next_items``.

    Attributes:
        name: Lake folder name, e.g. ``sasrec_model``.
        model: The trained sequence model (CPU, eval mode).
        item_ids: Original item id of each token ``1..n_vocab``.  # [n_vocab]
        width: Items of input per session (the session width it trained with).
        source: The lake folder, or ``mlflow run <id>``.
    """

    name: str
    model: SequenceModel
    item_ids: np.ndarray
    width: int
    source: str


def resolve_session_model(lake: str | os.PathLike[str], name: str | None = None,
                          tracking_uri: str | None = None) -> SessionModel:
    """The sequence model to serve sessions with: the lake folder ``name``, else the
    next-item champion with the best validation NDCG@10 (from its run's next-item pyfunc
    artifacts, ``tracking_export.log_next_items_model``).

    Raises:
        ValueError: ``name`` is not a sequence model, no next-item champion, or a champion
            run without the pyfunc artifacts (logged before they existed).
        FileNotFoundError: A missing model folder or lake file.
    """
    if name:
        served, maps = load_lake_served(lake, name)
        if not isinstance(served, SequenceServing):
            raise ValueError(f"{model_folder_name(name)} is not a next-item model; name one "
                             f"of gru4rec, sasrec, cooccurrence")
        return SessionModel(model_folder_name(name), served.model,
                            maps.items.column(S.ITEM_ID).to_numpy(),
                            int(served.tokens.shape[1]),
                            str(Path(lake) / MODELS_DIR / model_folder_name(name)))
    champion = _best_champion(lake, tracking_uri, "next")
    if champion is None:
        raise ValueError("no next-item champion in MLflow: materialize models/sasrec_model "
                         "(or gru4rec, cooccurrence), or name a lake model with --model")
    folder, run_id = champion
    import mlflow.artifacts

    uri = default_tracking_uri(lake, tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, env_defaults(QUIET_DOWNLOADS_ENV):
        try:
            root = Path(mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=RUN_PYFUNC_ARTIFACTS, dst_path=tmp,
                tracking_uri=uri))
            width = int(json.loads((root / WIDTH_FILE).read_text())["width"])
        except Exception as exc:  # MLflow raises its own and OSError types for a missing path
            raise ValueError(f"MLflow run {run_id} ({folder}) has no next-item pyfunc "
                             f"({RUN_PYFUNC_ARTIFACTS}/{WIDTH_FILE}); it was logged "
                             f"before they existed: retrain it, or name a lake model with "
                             f"--model ({exc})") from exc
        model = load_ranking_model(root / "model", map_location="cpu")
        items = pq.read_table(root / "items.parquet").column(S.ITEM_ID).to_numpy()
    if not isinstance(model, SequenceModel) or len(items) != model.n_vocab:
        raise ValueError(f"MLflow run {run_id}: not a next-item model with one id per token")
    return SessionModel(folder, model.eval(), items, width, f"mlflow run {run_id}")


def lake_top_k(lake: str | os.PathLike[str], name: str | None, k: int,
               device: torch.device | str | None = None,
               tracking_uri: str | None = None) -> tuple[ServingModel, pa.Table]:
    """Every user's top-``k`` unrated items from the lake model ``name``.

    Args:
        lake: The lake folder.
        name: Model folder name (``mf`` or ``mf_model``); None or ``""``: the champion that
            ranks best, else ``mf_model`` (:func:`resolve_model`).
        k: List length, ``1 <= k <= n_items``.
        device: Where to score (None: the CPU the model is loaded on).
        tracking_uri: The MLflow store holding the champions (default:
            :func:`default_tracking_uri`).

    Returns:
        The model and its ``USER_TOP_K_SCHEMA`` table (user_id, rank, item_id, score), never
        an item the user has rated (:func:`load_seen`).
    """
    served = resolve_model(lake, name or None, tracking_uri=tracking_uri)
    top = batch_top_k(served.model, load_seen(lake, served.maps), k, device=device)
    table = top_k_table(top, served.maps)
    folded = fold_in_lake_users(lake, served, users_unknown_to(served, load_maps(lake)))
    if not folded:
        return served, table
    return served, pa.concat_tables([table, folded_top_k_table(folded, served.maps, k)])


def users_unknown_to(served: ServingModel, current: IdMaps) -> np.ndarray:
    """The users of the lake's current id maps that the served model does not know (they
    rated, e.g. as stored new users, after it was trained), ascending.  # [n] int64"""
    ids = current.users.column(S.USER_ID).to_numpy().astype(np.int64)
    known = np.isin(ids, served.maps.users.column(S.USER_ID).to_numpy())
    return np.sort(ids[~known])


def lake_user_ratings(lake: str | os.PathLike[str], user_ids: np.ndarray,
                      split: str | None = None) -> pa.Table:
    """The ``clean/ratings`` rows of ``user_ids`` (user_id, item_id, rating, timestamp), or
    their rows of ``prepared/splits/<split>`` when ``split`` is given; read in one pass with
    the filter pushed down, sorted by user (stable: file order within a user)."""
    if split is None:
        path, asset = Path(lake).joinpath(*RATINGS_FILE), "clean/ratings"
    else:
        path, asset = Path(lake).joinpath(*SPLITS_DIR, f"{split}.parquet"), "prepared/splits"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such lake file; materialize {asset}")
    wanted = pa.array(np.asarray(user_ids, dtype=np.int64), pa.int64()).cast(S.ID_TYPE)
    rows = pq.read_table(path, columns=[S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP],
                         filters=pc.is_in(pc.field(S.USER_ID), value_set=wanted))
    return rows.take(pa.array(np.argsort(rows.column(S.USER_ID).to_numpy(), kind="stable")))


def fold_in_lake_users(lake: str | os.PathLike[str], served: ServingModel,
                       user_ids: np.ndarray) -> dict[int, FoldedUser]:
    """Users the served model does not know, folded in from their ``clean/ratings`` rows
    (as ``new-user`` does with a file; movies the model does not know are skipped). Users
    without lake ratings, or whose ratings the model cannot use, are left out (logged).
    One read of the ratings for all of them; then one fold-in per user (a few per retrain)."""
    folded: dict[int, FoldedUser] = {}
    rows = lake_user_ratings(lake, user_ids) if len(user_ids) else None
    if rows is None or rows.num_rows == 0:
        return folded
    users = rows.column(S.USER_ID).to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(users)], strict=True):
        user_id = int(users[start])
        try:
            folded[user_id] = fold_in(served.model, rows.slice(start, end - start),
                                      served.maps, FoldInConfig(unknown="skip"))
        except ValueError as exc:  # e.g. no movie the model knows, no positive rating
            logger.warning("user %d not served: %s", user_id, exc)
    return folded


def folded_top_k_table(folded: dict[int, FoldedUser], maps: IdMaps, k: int) -> pa.Table:
    """``USER_TOP_K_SCHEMA`` rows of folded-in users' top-``k`` unrated items."""
    columns: dict[str, list] = {name: [] for name in USER_TOP_K_SCHEMA.names}
    for user_id, user in sorted(folded.items()):
        scores = user.scores.clone()
        scores[torch.from_numpy(user.item_idx)] = float("-inf")
        top_scores, top = torch.topk(scores, min(k, scores.shape[0]))
        keep = torch.isfinite(top_scores).numpy()
        n = int(keep.sum())
        columns[S.USER_ID] += [user_id] * n
        columns["rank"] += list(range(1, n + 1))
        columns[S.ITEM_ID] += maps.to_item_ids(top.numpy()[keep]).tolist()
        columns["score"] += top_scores.numpy()[keep].tolist()
    return pa.Table.from_pydict(columns, schema=USER_TOP_K_SCHEMA)
