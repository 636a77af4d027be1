"""Ranking models served in original ids (``serving.ranking_serving``, ``ranking_fold_in``) on
a lake the whole pipeline built; every answer is checked against a brute-force ranking made
here from the raw model's own score function and the lake's tables."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.assets.serve import serve_assets, user_recommendations
from recsys_pipeline.data.lake import read_parquet
from recsys_pipeline.model_io import build_train_resources
from recsys_pipeline.models.ranking_base import load_ranking_model
from recsys_pipeline.resources import build_resources
from recsys_pipeline.serving import lake_models as lm
from recsys_pipeline.serving.fold_in import FoldInConfig, fold_in
from recsys_pipeline.serving.ranking_serving import FoldInServing, SequenceServing
from recsys_pipeline.serving.recommend import recommend, seen_items
from recsys_pipeline.serving.similar import similar_items
from recsys_pipeline_tests.pipeline_lake import build_pipeline_lake

FOLD_IN = ("autoencoder_model", "multvae_model", "ease_model")
SEQUENCE = ("gru4rec_model", "sasrec_model", "cooccurrence_model")
RANKING = (*FOLD_IN, *SEQUENCE, "two_tower_model")
OP = "serve__user_recommendations"
K = 3


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ranking_serving") / "lake"
    build_pipeline_lake(root, serve_assets, {OP: {"config": {"model": "ease_model", "k": K}}})
    return root


@pytest.fixture(scope="module")
def train(lake: Path) -> pa.Table:
    return lm.load_split(lake, "train")


def _user_rows(table: pa.Table, user_id: int) -> pa.Table:
    return table.filter(pc.equal(table.column(S.USER_ID), user_id))


def _raw_scores(lake: Path, name: str, train: pa.Table, user_id: int
                ) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """``(item ids, scores, excluded ids)`` of one user, straight from the saved model:
    per-item loops over a handful of ratings, independent of the serving code. Excluded:
    every movie the user rated in the lake, held-out ratings too."""
    raw = load_ranking_model(lake / "models" / name)
    maps = lm.load_maps(lake)
    mine = _user_rows(train, user_id)
    rated = set(_user_rows(read_parquet(lake / "clean" / "ratings.parquet"), user_id)
                .column(S.ITEM_ID).to_pylist())
    assert rated > set(mine.column(S.ITEM_ID).to_pylist())
    u = int(maps.to_user_idx(np.array([user_id]))[0])
    with torch.no_grad():
        if name == "two_tower_model":
            ids = maps.items.column(S.ITEM_ID).to_numpy()
            return ids, raw.score_all(torch.tensor([u]))[0].numpy(), rated
        if name in FOLD_IN:
            cols = read_parquet(lake / "prepared" / "strong_generalization_items.parquet")
            ids = cols.sort_by("column").column(S.ITEM_ID).to_numpy()
            row = raw.history().dense_rows(torch.tensor([u]))  # [1, n_items]
            if not row.any():  # held out / filtered: the train split's positives
                for item, rating in zip(mine.column(S.ITEM_ID).to_pylist(),
                                        mine.column(S.RATING).to_pylist(), strict=True):
                    if rating >= 4.0 and item in ids:
                        row[0, int(np.flatnonzero(ids == item)[0])] = 1.0
            excluded = rated | set(ids[row[0].numpy() > 0].tolist())
            return ids, raw.score_all_from(row)[0].numpy(), excluded
        vocab = np.load(lake / "prepared" / "session_sequences" / "arrays.npz")["vocab"]
        ids = maps.items.column(S.ITEM_ID).to_numpy()[vocab]
        order = np.argsort(mine.column(S.TIMESTAMP).cast(pa.int64()).to_numpy(), kind="stable")
        seq = [int(np.flatnonzero(ids == i)[0]) + 1
               for i in np.asarray(mine.column(S.ITEM_ID).to_pylist())[order] if i in ids]
        tokens = torch.tensor([[0] * (50 - len(seq[-50:])) + seq[-50:]])
        return ids, raw.score_next(tokens)[0, 1:].numpy(), rated


def _brute_top(ids: np.ndarray, scores: np.ndarray, excluded: set[int], k: int
               ) -> tuple[list[int], np.ndarray]:
    keep = ~np.isin(ids, list(excluded))
    order = np.argsort(-scores[keep], kind="stable")[:k]
    return ids[keep][order].tolist(), scores[keep][order]


@pytest.mark.parametrize("name", RANKING)
def test_recommend_matches_brute_force_for_every_user(lake, train, name):
    served = lm.resolve_model(lake, name)
    _, top = lm.lake_top_k(lake, name, K)
    movies, seen = lm.load_movies(lake), lm.load_seen(lake, served.maps)
    users = served.maps.users.column(S.USER_ID).to_pylist()
    assert top.num_rows == K * len(users)
    for user_id in users:
        ids, scores, excluded = _raw_scores(lake, name, train, user_id)
        want_ids, want_scores = _brute_top(ids, scores, excluded, K)
        got = _user_rows(top, user_id)
        assert got.column("rank").to_pylist() == list(range(1, K + 1))
        got_scores, got_ids = got.column("score").to_numpy(), got.column(S.ITEM_ID).to_numpy()
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
        # the same items up to ties: each shown score is the model's score of that item
        at = [int(np.flatnonzero(ids == i)[0]) for i in got_ids]
        np.testing.assert_allclose(scores[at], got_scores, rtol=1e-5, atol=1e-6)
        assert not set(got_ids.tolist()) & excluded
        strict = want_scores > want_scores[-1] + 1e-6  # above the k-th score: no tie
        assert set(got_ids[strict].tolist()) == set(np.asarray(want_ids)[strict].tolist())
        assert (np.diff(got_scores) <= 0).all()
    one = recommend(served.model, served.maps, movies, users[0], K, seen)
    assert one.column(S.ITEM_ID).to_pylist() == _user_rows(top, users[0])[S.ITEM_ID].to_pylist()
    assert one.column(S.TITLE).null_count == 0 and (np.diff(one["score"].to_numpy()) <= 0).all()


def test_item_maps_match_each_models_item_space(lake):
    maps = lm.load_maps(lake)
    for name in FOLD_IN:
        served = lm.resolve_model(lake, name)
        assert isinstance(served.model, FoldInServing) and served.model.family in name
        cols = read_parquet(lake / "prepared" / "strong_generalization_items.parquet")
        assert served.maps.items[S.ITEM_ID].to_pylist() == cols.sort_by("column")[
            S.ITEM_ID].to_pylist()
        assert served.maps.n_items == served.model.model.n_items < maps.n_items
    for name in SEQUENCE:
        served = lm.resolve_model(lake, name)
        assert isinstance(served.model, SequenceServing)
        assert served.maps.n_items == served.model.model.n_vocab
    assert lm.resolve_model(lake, "two_tower").maps.n_items == maps.n_items


def test_held_out_users_are_served_from_their_train_positives(lake, train):
    served = lm.resolve_model(lake, "ease")
    history = served.model.model.history().row_nnz()
    held_out = np.flatnonzero(history.numpy() == 0)
    assert held_out.size >= 1  # strong generalization held users out of training
    u = int(held_out[0])
    row = served.model.rows(torch.tensor([u]))[0]
    user_id = int(served.maps.to_user_ids(np.array([u]))[0])
    mine = _user_rows(train, user_id)
    mine = mine.filter(pc.greater_equal(mine[S.RATING], 4.0))
    cols = set(served.maps.items[S.ITEM_ID].to_pylist())
    expected = {i for i in mine[S.ITEM_ID].to_pylist() if i in cols}
    got = set(served.maps.to_item_ids(np.flatnonzero(row.numpy())).tolist())
    assert got == expected and len(expected) > 0


@pytest.mark.parametrize("name", FOLD_IN)
def test_new_user_copying_a_user_gets_that_users_list(lake, train, name):
    served = lm.resolve_model(lake, name)
    movies = lm.load_movies(lake)
    held_out = np.flatnonzero(served.model.model.history().row_nnz().numpy() == 0)
    # a held-out user is served from the train split: copying it gives the very same list
    user_id = int(served.maps.to_user_ids(held_out[:1])[0])
    mine = _user_rows(train, user_id).select([S.ITEM_ID, S.RATING])
    folded = fold_in(served.model, mine, served.maps, FoldInConfig(unknown="skip"))
    assert folded.method == "encoder"
    # the folded-in copy knows the train ratings only; so does this list's exclusion
    known = np.isin(mine[S.ITEM_ID].to_numpy(), served.maps.items[S.ITEM_ID].to_numpy())
    items = served.maps.to_item_idx(mine[S.ITEM_ID].to_numpy()[known])
    train_seen = seen_items(pa.table({S.USER_IDX: np.full(items.size, held_out[0]),
                                      S.ITEM_IDX: items}), served.maps.n_users)
    want = recommend(served.model, served.maps, movies, user_id, K, train_seen)
    assert folded.recommend(served.maps, movies, K).equals(want)
    # a trained user: all their ratings rebuild the stored row, so the same scores
    u = int(np.flatnonzero(served.model.model.history().row_nnz().numpy() > 0)[0])
    trained_id = int(served.maps.to_user_ids(np.array([u]))[0])
    encoded = read_parquet(lake / "prepared" / "encoded_ratings.parquet")
    everything = _user_rows(encoded, trained_id).select([S.ITEM_ID, S.RATING])
    folded = fold_in(served.model, everything, served.maps, FoldInConfig(unknown="skip"))
    torch.testing.assert_close(folded.scores, served.model.score_all(torch.tensor([u]))[0])
    rated = set(everything[S.ITEM_ID].to_pylist())
    recs = folded.recommend(served.maps, movies, K)[S.ITEM_ID].to_pylist()
    assert len(recs) == K and not set(recs) & rated


@pytest.mark.parametrize("name", SEQUENCE)
def test_new_user_sequence_is_ordered_by_time_and_excluded(lake, train, name):
    served = lm.resolve_model(lake, name)
    movies = lm.load_movies(lake)
    user_id = 5
    mine = _user_rows(train, user_id).select([S.ITEM_ID, S.RATING, S.TIMESTAMP])
    shuffled = mine.take(pa.array(np.random.default_rng(0).permutation(mine.num_rows)))
    folded = fold_in(served.model, shuffled, served.maps)
    assert folded.method == "sequence"
    u = int(served.maps.to_user_idx(np.array([user_id]))[0])
    torch.testing.assert_close(folded.scores, served.model.score_all(torch.tensor([u]))[0])
    recs = folded.recommend(served.maps, movies, K)[S.ITEM_ID].to_pylist()
    assert len(recs) == K and not set(recs) & set(mine[S.ITEM_ID].to_pylist())
    # without timestamps the file order is the sequence
    in_order = shuffled.sort_by(S.TIMESTAMP).drop_columns([S.TIMESTAMP])
    torch.testing.assert_close(fold_in(served.model, in_order, served.maps).scores,
                               folded.scores)

def test_two_tower_new_user_fits_the_positives(lake, train):
    served = lm.resolve_model(lake, "two_tower")
    mine = _user_rows(train, 7).select([S.ITEM_ID, S.RATING])
    before = {k: v.clone() for k, v in served.model.state_dict().items()}
    folded = fold_in(served.model, mine, served.maps)
    again = fold_in(served.model, mine, served.maps)
    assert folded.method == "gradient" and torch.equal(folded.scores, again.scores)
    pos = served.maps.to_item_idx(mine.filter(pc.greater_equal(mine[S.RATING], 4.0))[
        S.ITEM_ID].to_numpy())
    others = np.setdiff1d(np.arange(served.maps.n_items), pos)
    assert folded.scores[pos].mean() > folded.scores[others].mean()
    recs = folded.recommend(served.maps, lm.load_movies(lake), K)[S.ITEM_ID].to_pylist()
    assert len(recs) == K and not set(recs) & set(mine[S.ITEM_ID].to_pylist())
    for key, value in served.model.state_dict().items():
        assert torch.equal(value, before[key])


def test_new_user_without_positives_is_an_error(lake, train):
    served = lm.resolve_model(lake, "ease")
    low = _user_rows(train, 2).filter(pc.less(_user_rows(train, 2)[S.RATING], 4.0))
    with pytest.raises(ValueError, match="ratings >= 4.0"):
        fold_in(served.model, low.select([S.ITEM_ID, S.RATING]), served.maps,
                FoldInConfig(unknown="skip"))


def test_similar_items(lake):
    served = lm.resolve_model(lake, "two_tower")
    movies = lm.load_movies(lake)
    table = similar_items(served.model, served.maps, movies, 3, K)
    vectors = torch.nn.functional.normalize(served.model.item_embeddings(), dim=1)
    i = int(served.maps.to_item_idx(np.array([3]))[0])
    cos = (vectors @ vectors[i]).numpy()
    cos[i] = -np.inf
    want = served.maps.to_item_ids(np.argsort(-cos, kind="stable")[:K]).tolist()
    assert table[S.ITEM_ID].to_pylist() == want
    with pytest.raises(ValueError, match="the sasrec model has no user/item embeddings"):
        similar_items(lm.resolve_model(lake, "sasrec").model, lm.resolve_model(
            lake, "sasrec").maps, movies, 3, K)


def test_serve_asset_with_ranking_models(lake):
    table = read_parquet(lake / "serve" / "user_recommendations.parquet")
    _, expected = lm.lake_top_k(lake, "ease_model", K)
    assert table.equals(expected) and table.num_rows == 30 * K
    resources = {**build_resources(str(lake)), **build_train_resources(str(lake))}
    result = dg.materialize([user_recommendations], resources=resources,
                            run_config=dg.RunConfig({OP: {"config": {"model": "sasrec",
                                                                      "k": 2}}}),
                            instance=dg.DagsterInstance.ephemeral())
    table = read_parquet(lake / "serve" / "user_recommendations.parquet")
    _, expected = lm.lake_top_k(lake, "sasrec_model", 2)
    assert result.success and table.equals(expected)
    counts = pc.value_counts(table[S.USER_ID]).field("counts").to_pylist()
    assert counts == [2] * 30


def test_run_id_of_a_ranking_model_is_refused(lake):
    from mlflow.tracking import MlflowClient

    uri = lm.default_tracking_uri(lake)
    run = MlflowClient(uri, uri).search_runs(
        [e.experiment_id for e in MlflowClient(uri, uri).search_experiments()],
        filter_string="tags.`dagster.asset_key` = 'models/ease_model'")[0]
    with pytest.raises(ValueError, match="--model ease_model"):
        lm.resolve_model(lake, run_id=run.info.run_id)


@pytest.mark.parametrize("name", ["ease", "sasrec", "two_tower"])
def test_cli_recommend_and_similar_with_ranking_models(lake, train, name, capsys):
    from recsys_pipeline.cli import main

    code = main(["--lake", str(lake), "recommend", "--user", "4", "-k", "3", "--model", name])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith(f"model: {name}_model ({name})")
    shown = [int(line.split()[1]) for line in out.splitlines()
             if line.strip()[:1].isdigit()]
    rated = set(_user_rows(train, 4).column(S.ITEM_ID).to_pylist())
    assert len(shown) == 3 and not set(shown) & rated
    code = main(["--lake", str(lake), "similar", "--item", "7", "-k", "3", "--model", name])
    out, err = capsys.readouterr()
    if name == "two_tower":
        assert code == 0, err
        assert "similar to item 7" in out
    else:
        assert code == 2 and "embeddings" in err


def test_cli_export_of_ranking_models(lake, tmp_path, capsys):
    """Fold-in models export their row scorer (onnxruntime gives the model's own scores of a
    user's row); a sequence model is refused in one line that says why."""
    import onnxruntime as ort

    from recsys_pipeline.cli import main

    out = tmp_path / "ease_export"
    assert main(["--lake", str(lake), "export", "--model", "ease", "--out", str(out)]) == 0
    info = json.loads((out / "export.json").read_text())
    served = lm.resolve_model(lake, "ease")
    n_items = served.model.model.n_items
    assert info["inputs"] == {"rows": ["float32", ["batch", n_items]]}
    assert '"rows" float32 [batch, ' in (out / "README.txt").read_text()
    assert read_parquet(out / "item_map.parquet").num_rows == n_items  # the row's columns
    rows = served.model.model.history().dense_rows(torch.arange(4)).float()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["scores"], {"rows": rows.numpy()})[0]
    with torch.no_grad():
        want = served.model.model.score_all_from(rows).numpy()
    assert np.isfinite(got).all()  # the serving wrapper's -inf masks are not exported
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    assert main(["--lake", str(lake), "export", "--model", "sasrec",
                 "--out", str(tmp_path / "sasrec_export")]) == 2
    err = capsys.readouterr().err
    assert "sequence model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sasrec_export").exists()


def test_cli_export_of_two_tower_has_nearest_neighbour_vectors(lake, tmp_path, capsys):
    """The exported tower vectors give every user the lake recommendations' top items."""
    from recsys_pipeline.cli import main
    from recsys_pipeline.serving.retrieval import read_vectors

    out = tmp_path / "two_tower_export"
    assert main(["--lake", str(lake), "export", "--model", "two_tower", "--out",
                 str(out)]) == 0
    assert "nearest-neighbour vectors" in capsys.readouterr().out
    served = lm.resolve_model(lake, "two_tower")
    user_ids, users = read_vectors(out / "user_vectors.parquet")
    item_ids, items = read_vectors(out / "item_vectors.parquet")
    assert user_ids.tolist() == served.maps.users.column(S.USER_ID).to_pylist()
    assert item_ids.tolist() == served.maps.items.column(S.ITEM_ID).to_pylist()
    seen = lm.load_seen(lake, served.maps)
    _, top = lm.lake_top_k(lake, "two_tower", K)
    inner = users @ items.T
    rows = np.repeat(np.arange(len(user_ids)), np.diff(seen.indptr.numpy()))
    inner[rows, seen.indices.numpy()] = -np.inf  # rated items left out, as the lists do
    want = item_ids[np.argsort(-inner, axis=1, kind="stable")[:, :K]]
    got = top.column(S.ITEM_ID).to_numpy().reshape(len(user_ids), K)
    np.testing.assert_array_equal(got, want)
