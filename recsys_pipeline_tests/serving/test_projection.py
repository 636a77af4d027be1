"""Item embeddings in 2-D, the genre scatter plot and the Embedding Projector files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.serving.projection import (
    item_projection,
    item_vectors,
    scatter_png,
    write_projector_files,
)
from recsys_pipeline_tests.serving.planted import ITEM_IDS, N_ITEMS, World

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_projection_columns_and_tsne_subset(world: World) -> None:
    vectors = item_vectors(world.models["mf"])
    weights = np.arange(N_ITEMS, dtype=float)  # the last 30 items are "most rated"
    table = item_projection(vectors, world.maps, world.movies, max_tsne_items=30,
                            item_weights=weights, seed=1)
    assert table.column_names == ["item_id", "title", "primary_genre", "pca_x", "pca_y",
                                  "tsne_x", "tsne_y"]
    assert table.column(S.ITEM_ID).to_pylist() == ITEM_IDS.tolist()
    assert table.column("pca_x").null_count == 0
    tsne_known = np.flatnonzero(table.column("tsne_x").is_valid().to_numpy(zero_copy_only=False))
    assert tsne_known.tolist() == list(range(N_ITEMS - 30, N_ITEMS))
    # PCA keeps the leading axis: its variance is the largest of any unit direction
    centred = vectors - vectors.mean(0)
    pca_var = np.var(table.column("pca_x").to_numpy())
    assert pca_var == pytest.approx(np.linalg.eigvalsh(np.cov(centred.T, bias=True))[-1],
                                    rel=1e-3)
    genres = table.column("primary_genre").to_pylist()
    # the most specific genre: of a movie's genres the one the fewest movies carry
    listed = world.movies.column("genres").to_pylist()
    carriers = Counter(g for gs in listed for g in gs)
    by_id = dict(zip(world.movies.column("item_id").to_pylist(), listed, strict=True))
    want = [min(by_id[i], key=lambda g: (carriers[g], g)) if by_id[i] else "(no genre)"
            for i in ITEM_IDS.tolist()]
    assert genres == want and genres[0] == "(no genre)"  # item 0 has none
    assert sum(w != (by_id[i] or ["(no genre)"])[0] for w, i in zip(want, ITEM_IDS.tolist(),
                                                                    strict=True)) > 5
    again = item_projection(vectors, world.maps, world.movies, max_tsne_items=30,
                            item_weights=weights, seed=1)
    assert again.equals(table)  # seeded


def test_scatter_png(world: World) -> None:
    table = item_projection(item_vectors(world.models["deepfm"]), world.maps, world.movies,
                            max_tsne_items=20, seed=0)
    for x, y in (("pca_x", "pca_y"), ("tsne_x", "tsne_y")):
        png = scatter_png(table, x, y, f"DeepFM items ({x[:-2]})", max_genres=3)
        assert png.startswith(PNG_MAGIC) and len(png) > 5_000


def test_projector_files(world: World, tmp_path: Path) -> None:
    vectors = item_vectors(world.models["neumf"])
    vec_path, meta_path = write_projector_files(vectors, world.maps, world.movies,
                                                tmp_path / "projector")
    vec_lines = vec_path.read_text().splitlines()
    meta_lines = meta_path.read_text().splitlines()
    assert len(vec_lines) == N_ITEMS and len(meta_lines) == N_ITEMS + 1  # header line
    assert meta_lines[0] == "title\tgenres\titem_id"
    assert meta_lines[6] == f"Heat, The (1995)\tSci-Fi|Drama\t{ITEM_IDS[5]}"
    assert meta_lines[1] == f"Film 0 (1950)\t\t{ITEM_IDS[0]}"  # no genres: empty field
    np.testing.assert_allclose(np.loadtxt(vec_path, delimiter="\t"), vectors, rtol=1e-5,
                               atol=1e-6)
    assert sorted(p.name for p in vec_path.parent.iterdir()) == ["metadata.tsv", "vectors.tsv"]


def test_no_embeddings_or_bad_shape(world: World) -> None:
    with pytest.raises(ValueError, match="no item embeddings"):
        item_vectors(world.models["bias"])
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        item_projection(np.zeros((3, 4)), world.maps, world.movies)
    vectors = item_vectors(world.models["mf"])
    with pytest.raises(ValueError, match="perplexity=0 must be > 0"):
        item_projection(vectors, world.maps, world.movies, perplexity=0)
