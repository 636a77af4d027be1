"""Top-K lists: never a rated item, equal to a brute-force ranking, in original ids."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.serving.recommend import batch_top_k, recommend, seen_items, top_k_table
from recsys_pipeline.serving.tables import RECOMMENDATIONS_SCHEMA, USER_TOP_K_SCHEMA
from recsys_pipeline_tests.serving.planted import ITEM_IDS, N_ITEMS, N_USERS, USER_IDS, World

FAMILIES = ["bias", "popularity", "mf", "mlp", "neumf", "deepfm"]


def rated_ids(world: World, user_id: int) -> set[int]:
    mine = world.train.filter(pc.equal(world.train.column(S.USER_ID), user_id))
    return set(mine.column(S.ITEM_ID).to_pylist())


def assert_valid_top_k(got_items: np.ndarray, got_scores: np.ndarray, full: np.ndarray,
                       want_scores: np.ndarray) -> None:
    """A correct top-K under ties: the k best values in order, each item holding its value."""
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(full, got_items, -1), got_scores, atol=1e-5)


def brute_force(world: World, family: str, u: int) -> tuple[np.ndarray, np.ndarray]:
    """Item ids and scores of every unrated item, best first, from one ``score`` per pair."""
    model = world.models[family]
    with torch.no_grad():
        scores = model.score(torch.full((N_ITEMS,), u), torch.arange(N_ITEMS)).numpy()
    rated = np.isin(ITEM_IDS, list(rated_ids(world, int(USER_IDS[u]))))
    order = np.argsort(-scores, kind="stable")
    order = order[~rated[order]]
    return ITEM_IDS[order], scores[order]


@pytest.mark.parametrize("family", FAMILIES)
def test_recommend_matches_brute_force_and_skips_rated(world: World, family: str) -> None:
    seen = seen_items(world.train, N_USERS)
    for u in (0, 17, 39):
        table = recommend(world.models[family], world.maps, world.movies, int(USER_IDS[u]), 10,
                          seen)
        assert table.schema == RECOMMENDATIONS_SCHEMA
        got = table.column(S.ITEM_ID).to_numpy()
        assert not set(got) & rated_ids(world, int(USER_IDS[u]))
        want_ids, want_scores = brute_force(world, family, u)
        by_id = dict(zip(want_ids.tolist(), want_scores.tolist(), strict=True))
        got_scores = table.column("score").to_numpy()
        # tied items (clamped at 5.0, equal popularity counts) may come in any order
        np.testing.assert_allclose(got_scores, want_scores[:10], atol=1e-5)
        np.testing.assert_allclose([by_id[i] for i in got], got_scores, atol=1e-5)
        assert table.column("rank").to_pylist() == list(range(1, 11))


def test_recommend_has_titles_years_genres(world: World) -> None:
    seen = seen_items(world.train, N_USERS)
    table = recommend(world.models["mf"], world.maps, world.movies, int(USER_IDS[5]), 5, seen)
    movies = {r[S.ITEM_ID]: r for r in world.movies.to_pylist()}
    for row in table.to_pylist():
        movie = movies[row[S.ITEM_ID]]
        assert (row[S.TITLE], row[S.YEAR], row[S.GENRES]) == (
            movie[S.TITLE], movie[S.YEAR], movie[S.GENRES])


def test_recommend_short_list_when_few_unrated(world: World) -> None:
    seen = seen_items(world.train, N_USERS)
    uid = int(USER_IDS[2])
    table = recommend(world.models["mf"], world.maps, world.movies, uid, N_ITEMS, seen)
    assert table.num_rows == N_ITEMS - len(rated_ids(world, uid))
    assert np.isfinite(table.column("score").to_numpy()).all()


@pytest.mark.parametrize(("user_id", "k", "message"), [
    (999_999, 5, "unknown user_id 999999: not one of the model.s 40 users .*new-user"),
    (int(USER_IDS[0]), 0, "k=0"),
    (int(USER_IDS[0]), N_ITEMS + 1, f"k={N_ITEMS + 1}"),
])
def test_recommend_rejects(world: World, user_id: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recommend(world.models["mf"], world.maps, world.movies, user_id, k,
                  seen_items(world.train, N_USERS))


def test_batch_top_k_is_hand_computed_mf_ranking(world: World) -> None:
    """MF scores are μ + b_u + b_i + P Qᵀ: recompute them in numpy and rank by hand."""
    mf = world.models["mf"]
    top = batch_top_k(mf, seen_items(world.train, N_USERS), k=8, batch_size=7)
    p, q = mf.user_factors.weight.detach().numpy(), mf.item_factors.weight.detach().numpy()
    full = (float(mf.global_mean) + mf.user_bias.weight.detach().numpy()
            + mf.item_bias.weight.detach().numpy().T + p @ q.T).clip(0.5, 5.0)
    seen_mask = seen_items(world.train, N_USERS).mask(torch.arange(N_USERS), N_ITEMS).numpy()
    full[seen_mask] = -np.inf
    assert top.user_idx.tolist() == list(range(N_USERS))
    want_scores = -np.sort(-full, axis=1)[:, :8]
    assert_valid_top_k(top.item_idx.numpy(), top.scores.numpy(), full, want_scores)
    assert not np.take_along_axis(seen_mask, top.item_idx.numpy(), 1).any()


@pytest.mark.parametrize("family", ["bias", "deepfm"])
def test_batch_top_k_same_for_any_batch_size(world: World, family: str) -> None:
    seen = seen_items(world.train, N_USERS)
    one = batch_top_k(world.models[family], seen, k=5, batch_size=3, device="cpu")
    auto = batch_top_k(world.models[family], seen, k=5)
    assert torch.equal(one.item_idx, auto.item_idx)
    assert torch.equal(one.scores, auto.scores)


def test_top_k_table_in_original_ids_drops_fillers(world: World) -> None:
    seen = seen_items(world.train, N_USERS)
    top = batch_top_k(world.models["mf"], seen, k=N_ITEMS)  # every unrated item, then fillers
    table = top_k_table(top, world.maps)
    assert table.schema == USER_TOP_K_SCHEMA
    n_seen = seen.counts().numpy()
    assert table.num_rows == int((N_ITEMS - n_seen).sum())
    first = table.slice(0, N_ITEMS - int(n_seen[0]))
    assert set(first.column(S.USER_ID).to_pylist()) == {int(USER_IDS[0])}
    assert first.column("rank").to_pylist() == list(range(1, first.num_rows + 1))
    want = recommend(world.models["mf"], world.maps, world.movies, int(USER_IDS[0]), 10, seen)
    got_scores, want_scores = first.column("score").to_numpy()[:10], want.column("score").to_numpy()
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)
    above = want_scores > want_scores[-1]  # ties at the cut may swap items
    assert set(first.column(S.ITEM_ID).to_numpy()[:10][above]) == set(
        want.column(S.ITEM_ID).to_numpy()[above])
    assert set(table.column(S.ITEM_ID).to_pylist()) <= set(ITEM_IDS.tolist())
    assert np.isfinite(table.column("score").to_numpy()).all()


def test_seen_must_cover_the_model_users(world: World) -> None:
    with pytest.raises(ValueError, match="seen item sets cover 3 users"):
        batch_top_k(world.models["mf"], seen_items(world.train, N_USERS).__class__(
            torch.zeros(4, dtype=torch.long), torch.zeros(0, dtype=torch.long)), k=3)


@pytest.mark.parametrize(("family", "table"), [
    ("mf", "item_factors"), ("mf", "user_bias"), ("mlp", "item_embedding")])
def test_nan_scores_raise(world: World, family: str, table: str) -> None:
    """A NaN anywhere in a row reaches its top-k (topk ranks NaN first), so it is caught."""
    import copy

    broken = copy.deepcopy(world.models[family])
    weight = getattr(broken, table).weight
    with torch.no_grad():
        weight[weight.shape[0] - 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN scores"):
        batch_top_k(broken, seen_items(world.train, N_USERS), k=3, batch_size=16)


def test_fast_path_equals_score_all_path(world: World) -> None:
    """MF / bias rank by a shifted score; the generic score_all path must agree."""
    from recsys_pipeline.serving import recommend as rec

    seen = seen_items(world.train, N_USERS)
    for family in ("mf", "bias"):
        model = world.models[family]
        fast = batch_top_k(model, seen, k=12)
        users = torch.arange(N_USERS)
        generic = model.score_all(users)
        row, item = seen.entries(users)
        generic[row, item] = float("-inf")
        want = torch.topk(generic, 12, dim=1).values
        torch.testing.assert_close(fast.scores, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(generic.gather(1, fast.item_idx), fast.scores, atol=1e-5,
                                   rtol=0)
        assert rec._ranking_scores(model, users[:2])[0].shape == (2, N_ITEMS)
