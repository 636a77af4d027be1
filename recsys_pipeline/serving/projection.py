"""Item embeddings in 2-D (PCA, t-SNE), a scatter plot by genre, and Embedding Projector files.

* PCA (scikit-learn) projects every item onto the two leading principal axes.
* t-SNE (scikit-learn, seeded, PCA-initialised) runs on at most ``max_tsne_items`` items: the
  most-rated ones when rating counts are given, else a seeded sample (t-SNE is quadratic-ish
  in items and slow past a few thousand).
* ``vectors.tsv`` (one item per line, tab-separated floats) and ``metadata.tsv`` (a header,
  then ``title, genres, item_id`` per item, same order) load into the TensorBoard Embedding
  Projector (projector.tensorflow.org → "Load"). Both are written atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.data.lake import write_atomic
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.serving.similar import EMBEDDING_FAMILIES, embeddings
from recsys_pipeline.serving.tables import movie_details
from recsys_pipeline.training.seed import numpy_generator

PRIMARY_GENRE = "primary_genre"
NO_GENRE = "(no genre)"
VECTORS_FILE = "vectors.tsv"
METADATA_FILE = "metadata.tsv"
AXES = ("pca_x", "pca_y", "tsne_x", "tsne_y")


def item_vectors(model: RatingModel) -> np.ndarray:
    """The model's item embeddings as float32 numpy (ValueError for a model without them)."""
    emb = embeddings(model)
    if emb is None:
        family = getattr(model, "family", type(model).__name__)
        raise ValueError(f"the {family} model has no item embeddings to project; models with "
                         f"them: {', '.join(EMBEDDING_FAMILIES)}")
    return emb[1].float().cpu().numpy()  # [n_items, d]


def primary_genres(item_ids: np.ndarray, movies: pa.Table) -> list[str]:
    """The most specific genre of each movie: of its genres, the one the fewest movies of
    the catalogue carry (ties: alphabetical), ``NO_GENRE`` where it has none. Toy Story's
    "Adventure|Animation|Children|Comedy|Fantasy" gives Animation, not the first listed
    (MovieLens lists genres alphabetically, so the first would colour most movies by
    Action, Adventure or Comedy)."""
    catalogue = pc.list_flatten(movies.column(S.GENRES))
    counts = catalogue.value_counts()  # struct of (values, counts)
    names = counts.field("values").to_numpy(zero_copy_only=False).astype(object)
    carried = counts.field("counts").to_numpy()
    genres = movie_details(item_ids, movies).column(S.GENRES).combine_chunks()
    flat = pc.list_flatten(genres).to_numpy(zero_copy_only=False).astype(object)
    parent = pc.list_parent_indices(genres).to_numpy()
    out = np.full(len(genres), NO_GENRE, dtype=object)
    if len(flat):
        count = carried[_index_of(names, flat)]
        # per movie, fewest carriers first, then the name: the first row of each movie wins
        order = np.lexsort((flat.astype(str), count, parent))
        first = np.r_[True, parent[order][1:] != parent[order][:-1]]
        out[parent[order][first]] = flat[order][first]
    return out.tolist()


def _index_of(names: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each of ``values`` in ``names`` (every value is one of them)."""
    order = np.argsort(names.astype(str))
    return order[np.searchsorted(names.astype(str)[order], values.astype(str))]


def _check(vectors: np.ndarray, maps: IdMaps) -> None:
    if vectors.ndim != 2 or vectors.shape[0] != maps.n_items or vectors.shape[1] < 2:
        raise ValueError(f"item vectors of shape {vectors.shape} must be [n_items={maps.n_items},"
                         " d >= 2]")
    if not np.isfinite(vectors).all():
        raise ValueError("item vectors hold NaN or inf")


def _tsne_rows(n: int, max_items: int, weights: np.ndarray | None, seed: int) -> np.ndarray:
    if n <= max_items:
        return np.arange(n)
    if weights is not None:
        return np.sort(np.argsort(-np.asarray(weights), kind="stable")[:max_items])
    return np.sort(numpy_generator(seed).choice(n, size=max_items, replace=False))


def item_projection(
    vectors: np.ndarray,
    maps: IdMaps,
    movies: pa.Table,
    max_tsne_items: int = 2000,
    item_weights: np.ndarray | None = None,
    seed: int = 0,
    perplexity: float = 30.0,
) -> pa.Table:
    """2-D PCA of every item and t-SNE of up to ``max_tsne_items`` items.

    Args:
        vectors: Item embeddings, row ``i`` = ``item_idx`` i.  # [n_items, d]
        maps: Id maps (item ids and titles).
        movies: ``schema.MOVIES_SCHEMA`` table (genres).
        max_tsne_items: Items t-SNE runs on (0 skips t-SNE).
        item_weights: Per-item weights (e.g. rating counts) choosing the t-SNE items; None
            samples them with ``seed``.  # [n_items]
        seed: Seeds PCA's solver, the sample and t-SNE.
        perplexity: t-SNE perplexity (capped below a third of the items).

    Returns:
        item_id, title, primary_genre, pca_x, pca_y, tsne_x, tsne_y (t-SNE columns null for
        items outside its subset), in ``item_idx`` order.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    _check(vectors, maps)
    if not perplexity > 0 or max_tsne_items < 0:
        raise ValueError(f"perplexity={perplexity} must be > 0 and max_tsne_items="
                         f"{max_tsne_items} >= 0")
    n = vectors.shape[0]
    item_ids = maps.items.column(S.ITEM_ID).to_numpy()
    pca = PCA(n_components=2, random_state=seed).fit_transform(vectors).astype(np.float32)
    tsne = np.full((n, 2), np.nan, dtype=np.float32)
    rows = _tsne_rows(n, max_tsne_items, item_weights, seed) if max_tsne_items > 0 else []
    if len(rows) >= 4:
        tsne[rows] = TSNE(n_components=2, perplexity=min(perplexity, (len(rows) - 1) / 3),
                          init="pca", random_state=seed).fit_transform(vectors[rows])
    details = movie_details(item_ids, movies, maps)
    cols = {S.ITEM_ID: details.column(S.ITEM_ID), S.TITLE: details.column(S.TITLE),
            PRIMARY_GENRE: pa.array(primary_genres(item_ids, movies))}
    for j, name in enumerate(AXES):
        values = (pca if j < 2 else tsne)[:, j % 2]
        cols[name] = pa.array(values, mask=np.isnan(values))
    return pa.table(cols)


def scatter_png(table: pa.Table, x: str, y: str, title: str, max_genres: int = 10) -> bytes:
    """A scatter plot of ``table[x]`` vs ``table[y]`` coloured by primary genre, as PNG bytes.

    The ``max_genres`` most frequent genres get their own colour; the rest are grey "other".
    Rows with a null coordinate are left out.

    Args:
        table: Output of :func:`item_projection`.
        x: Column for the horizontal axis (e.g. ``"pca_x"``).
        y: Column for the vertical axis.
        title: Plot title.
        max_genres: Genres with a colour of their own.

    Returns:
        The PNG file's bytes (matplotlib's Agg renderer; no display, no global state).
    """
    from matplotlib.figure import Figure

    xs = table.column(x).to_numpy(zero_copy_only=False).astype(np.float64)
    ys = table.column(y).to_numpy(zero_copy_only=False).astype(np.float64)
    genre = np.asarray(table.column(PRIMARY_GENRE).to_pylist(), dtype=object)
    keep = np.isfinite(xs) & np.isfinite(ys)
    if not keep.any():
        raise ValueError(f"no row has both {x!r} and {y!r}")
    names, counts = np.unique(genre[keep].astype(str), return_counts=True)
    top = [str(g) for g in names[np.argsort(-counts, kind="stable")][:max_genres]]
    fig = Figure(figsize=(8, 6), dpi=100)
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(10)] + ["#17becf", "#bcbd22", "#8c564b", "#e377c2"]
    other = keep & ~np.isin(genre.astype(str), top)
    if other.any():
        ax.scatter(xs[other], ys[other], s=4, c="#bbbbbb", alpha=0.5, label="other")
    for i, g in enumerate(top):
        sel = keep & (genre == g)
        ax.scatter(xs[sel], ys[sel], s=6, c=colours[i % len(colours)], alpha=0.8, label=g)
    ax.set(title=title, xlabel=x, ylabel=y)
    ax.legend(markerscale=3, fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _clean(text: str | None) -> str:
    """Tabs and newlines would break the TSV's columns and rows."""
    return " ".join((text or "").split())


def write_projector_files(
    vectors: np.ndarray, maps: IdMaps, movies: pa.Table, folder: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Write ``vectors.tsv`` and ``metadata.tsv`` for the TensorBoard Embedding Projector.

    Args:
        vectors: Item embeddings in ``item_idx`` order.  # [n_items, d]
        maps: Id maps.
        movies: ``schema.MOVIES_SCHEMA`` table.
        folder: Target folder (created when missing).

    Returns:
        ``(vectors_path, metadata_path)``; metadata has a header line plus one line per
        vector line.
    """
    _check(vectors, maps)
    folder = Path(folder)
    details = movie_details(maps.items.column(S.ITEM_ID).to_numpy(), movies, maps)
    lines = ["title\tgenres\titem_id"]
    for item, title, genres in zip(details.column(S.ITEM_ID).to_pylist(),
                                   details.column(S.TITLE).to_pylist(),
                                   details.column(S.GENRES).to_pylist(), strict=True):
        lines.append(f"{_clean(title)}\t{_clean('|'.join(genres or []))}\t{item}")
    meta_text = "\n".join(lines) + "\n"
    buf = io.StringIO()
    np.savetxt(buf, vectors.astype(np.float32), fmt="%.6g", delimiter="\t")
    vec_text = buf.getvalue()
    vec_path = write_atomic(folder / VECTORS_FILE,
                            lambda p: p.write_text(vec_text, encoding="utf-8"))
    meta_path = write_atomic(folder / METADATA_FILE,
                             lambda p: p.write_text(meta_text, encoding="utf-8"))
    return vec_path, meta_path
