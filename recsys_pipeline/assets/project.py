"""Project stage: a trained model's item embeddings in 2-D, for people to look at.

``reports/item_projection`` (core: ``serving.projection``) projects the item embeddings of
a lake model (the MLflow champion by default) with PCA, and with t-SNE on at most
``tsne_max_items`` items (the most-rated ones), plots both coloured by each movie's first
genre, and writes ``<lake>/reports/item_projection/<model>/``: ``vectors.tsv`` +
``metadata.tsv`` (header ``title, genres, item_id``) for the TensorBoard Embedding Projector
(projector.tensorflow.org → Load), ``projection.parquet`` (item_id, title, primary_genre,
pca_x/y, tsne_x/y) and ``pca.png`` / ``tsne.png``. The folder is written beside its final
place and renamed into it. Plots and files also go to an MLflow run
``item_projection-<model>`` tagged with the source model's run id when one is known.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pyarrow.parquet as pq

from recsys_pipeline.assets.prepare import PREFIX as PREPARED
from recsys_pipeline.assets.prepare import split_key
from recsys_pipeline.assets.train import model_assets
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.metadata import png_markdown
from recsys_pipeline.model_io import check_replaceable, replace_dir
from recsys_pipeline.resources import LakeResource
from recsys_pipeline.serving.lake_models import ServingModel, load_movies, train_support
from recsys_pipeline.serving.projection import (
    item_projection,
    item_vectors,
    scatter_png,
    write_projector_files,
)
from recsys_pipeline.tracking import TAG_ASSET, MlflowResource

GROUP = "project"
REPORTS = "reports"
METHODS = ("pca", "tsne")
LABELS = {"pca": "PCA", "tsne": "t-SNE"}
TAG_SOURCE_RUN = "source.run_id"
TAG_SOURCE_MODEL = "source.model"


@dataclass(frozen=True)
class ItemProjection:
    """What :func:`write_item_projection` wrote.

    Attributes:
        folder: ``<out>`` holding the TSVs, the Parquet table and the PNGs.
        pngs: Plot per method (``pca``, ``tsne``), PNG bytes.
        explained_variance: Share of the embedding variance on each PCA axis.
        n_items: Items projected (lines of ``vectors.tsv``).
        n_tsne_items: Items t-SNE placed (0 when skipped).
    """

    folder: Path
    pngs: dict[str, bytes]
    explained_variance: list[float]
    n_items: int
    n_tsne_items: int


def _train_counts(lake: Path, maps: IdMaps) -> np.ndarray | None:
    """Ratings per item index of ``maps`` in the train split (t-SNE keeps the most-rated
    items); None without a split."""
    try:
        return train_support(lake, maps)
    except FileNotFoundError:
        return None


def write_item_projection(lake: str | Path, served: ServingModel, out: str | Path,
                          methods: tuple[str, ...] = METHODS, tsne_max_items: int = 2000,
                          perplexity: float = 30.0, seed: int = 0) -> ItemProjection:
    """Project ``served``'s item embeddings and write the folder ``out`` (see the module doc).

    Raises:
        ValueError: An unknown method, a model without item embeddings (bias, popularity), or
            an ``out`` that exists and is not an earlier projection.
    """
    from sklearn.decomposition import PCA

    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise ValueError(f"methods {list(methods)}: choose from {list(METHODS)}")
    if tsne_max_items < 0:
        raise ValueError(f"tsne_max_items={tsne_max_items} must be >= 0 (0: PCA only)")
    lake, out = Path(lake), Path(out)
    check_replaceable(out, "projection.parquet", "item projection")
    vectors, movies = item_vectors(served.model), load_movies(lake)
    n_tsne = tsne_max_items if "tsne" in methods else 0
    table = item_projection(vectors, served.maps, movies, n_tsne,
                            _train_counts(lake, served.maps), seed, perplexity)
    variance = PCA(n_components=2, random_state=seed).fit(vectors).explained_variance_ratio_
    placed = table.num_rows - table.column("tsne_x").null_count
    pngs = {m: scatter_png(table, f"{m}_x", f"{m}_y", f"{served.name}: {LABELS[m]} of item "
                           "embeddings") for m in methods if m == "pca" or placed}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    write_projector_files(vectors, served.maps, movies, tmp)
    pq.write_table(table, tmp / "projection.parquet")
    for method, png in pngs.items():
        (tmp / f"{method}.png").write_bytes(png)
    tmp.chmod(0o755)
    replace_dir(tmp, out)
    return ItemProjection(out, pngs, [float(v) for v in variance], table.num_rows, placed)


def source_run_id(tracker: MlflowResource, served: ServingModel) -> str | None:
    """The MLflow run the served weights come from: the named run, else the latest finished
    run of the model's asset (None when the store has none)."""
    if served.source.startswith("mlflow run "):
        return served.source.removeprefix("mlflow run ")
    experiment = tracker.experiment_id(create=False)
    runs = [] if experiment is None else tracker.client().search_runs(
        [experiment], filter_string=f"tags.`{TAG_ASSET}` = 'models/{served.name}' "
                                    "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def log_projection(tracker: MlflowResource, served: ServingModel,
                   result: ItemProjection) -> str:
    """One MLflow run ``item_projection-<model>`` with the folder's files; returns its id."""
    source = source_run_id(tracker, served)
    tags = {TAG_SOURCE_MODEL: served.name, **({TAG_SOURCE_RUN: source} if source else {})}
    with tracker.start_run(f"item_projection-{served.name}", tags) as run:
        mlflow.log_params({"n_items": result.n_items, "n_tsne_items": result.n_tsne_items})
        mlflow.log_metrics({f"pca_explained_variance_{i + 1}": v
                            for i, v in enumerate(result.explained_variance)})
        mlflow.log_artifacts(str(result.folder), "item_projection")
        return run.info.run_id


class ItemProjectionConfig(dg.Config):
    """Which model to project, and how."""

    # a model folder under <lake>/models (mf_model, neumf, ...); "" = the best-ranking MLflow
    # champion that has item embeddings, else mf_model (serving.lake_models.resolve_model)
    model: str = ""
    # t-SNE runs on at most this many items (the most-rated); 0 = PCA only
    tsne_max_items: int = 2000
    # t-SNE perplexity (capped below a third of the items)
    perplexity: float = 30.0
    # seeds PCA's solver and t-SNE
    seed: int = 0
    # projections to compute and plot: pca, tsne
    methods: list[str] = list(METHODS)


@dg.asset(key_prefix=REPORTS, name="item_projection", group_name=GROUP,
          kinds={"pytorch", "sklearn", "mlflow"},
          deps=[*model_assets, dg.AssetKey(["clean", "movies"]), split_key("train"),
                dg.AssetKey([PREPARED, "user_map"]), dg.AssetKey([PREPARED, "item_map"])])
def item_projection_report(context: dg.AssetExecutionContext, config: ItemProjectionConfig,
                           lake: LakeResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    """Item embeddings in 2-D (PCA, t-SNE) by genre, and Embedding Projector TSV files."""
    from recsys_pipeline.serving.lake_models import resolve_model

    served = resolve_model(lake.path(), config.model or None,
                           tracking_uri=mlflow.resolved_tracking_uri(), by="embeddings")
    out = lake.path(REPORTS, "item_projection", served.name)
    result = write_item_projection(lake.path(), served, out, tuple(config.methods),
                                   config.tsne_max_items, config.perplexity, config.seed)
    run_id = log_projection(mlflow, served, result)
    return dg.MaterializeResult(metadata={
        "model": served.name, "family": served.model.family, "mlflow_run_id": run_id,
        "folder": dg.MetadataValue.path(str(out)),
        "vectors_tsv": dg.MetadataValue.path(str(out / "vectors.tsv")),
        "metadata_tsv": dg.MetadataValue.path(str(out / "metadata.tsv")),
        "dagster/row_count": result.n_items, "tsne_items": result.n_tsne_items,
        "pca_explained_variance": [round(v, 4) for v in result.explained_variance],
        **{f"{m}_plot": png_markdown(png, f"{m} of item embeddings")
           for m, png in result.pngs.items()}})


project_assets = [item_projection_report]
project_job = dg.define_asset_job("project_job", selection=dg.AssetSelection.groups(GROUP))
