"""Fold-in: a new user who copies an existing user's ratings gets that user's answers back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.serving.fold_in import FoldInConfig, fold_in
from recsys_pipeline.serving.tables import RECOMMENDATIONS_SCHEMA
from recsys_pipeline_tests.serving.planted import ITEM_IDS, N_ITEMS, USER_IDS, World

USERS = range(0, 40, 5)


def copied(world: World, u: int) -> pa.Table:
    """User ``u``'s training ratings, as a new user would give them (item_id, rating)."""
    return world.train.filter(pc.equal(world.train.column(S.USER_ID), int(USER_IDS[u])))


def trained_scores(world: World, family: str, u: int) -> torch.Tensor:
    with torch.no_grad():
        return world.models[family].score_all(torch.tensor([u]))[0]


def top_unrated(scores: torch.Tensor, rated: np.ndarray, k: int) -> set[int]:
    s = scores.clone()
    s[torch.from_numpy(rated)] = float("-inf")
    return set(torch.topk(s, k).indices.tolist())


def test_bias_closed_form_is_the_trained_user_bias(world: World) -> None:
    """The bias model's last ALS update is the same closed form: exact agreement."""
    for u in USERS:
        folded = fold_in(world.models["bias"], copied(world, u), world.maps)
        assert folded.method == "closed_form"
        assert float(folded.user_params["user_bias"]) == pytest.approx(
            float(world.models["bias"].user_bias[u]), abs=1e-5)
        torch.testing.assert_close(folded.scores, trained_scores(world, "bias", u))


def test_mf_closed_form_matches_the_trained_user(world: World) -> None:
    """Trained to convergence, the user's factors solve the same ridge system."""
    mf = world.models["mf"]
    for u in USERS:
        folded = fold_in(mf, copied(world, u), world.maps)
        full = trained_scores(world, "mf", u)
        assert float((folded.scores - full).abs().max()) < 0.03
        torch.testing.assert_close(folded.user_params["user_factors.weight"][0],
                                   mf.user_factors.weight[u].detach(), atol=0.05, rtol=0.0)
        assert top_unrated(folded.scores, folded.item_idx, 5) == top_unrated(
            full, folded.item_idx, 5)


@pytest.mark.parametrize("family", ["mlp", "neumf", "deepfm"])
def test_neural_fold_in_recovers_top_items(world: World, family: str) -> None:
    overlaps = []
    for u in USERS:
        folded = fold_in(world.models[family], copied(world, u), world.maps)
        assert folded.method == "gradient" and folded.fit_rmse < 0.4
        full = trained_scores(world, family, u)
        overlaps.append(len(top_unrated(folded.scores, folded.item_idx, 10)
                            & top_unrated(full, folded.item_idx, 10)))
    assert np.mean(overlaps) >= 8.5, overlaps


def test_neural_fold_in_leaves_model_alone_and_is_seeded(world: World) -> None:
    model = world.models["deepfm"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    a = fold_in(model, copied(world, 3), world.maps, FoldInConfig(seed=4))
    b = fold_in(model, copied(world, 3), world.maps, FoldInConfig(seed=4))
    assert torch.equal(a.scores, b.scores)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for p, g in zip(model.parameters(), grads, strict=True):  # (training may leave grads)
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert not model.training


@pytest.mark.parametrize("family", ["bias", "mf", "mlp", "popularity"])
def test_recommendations_exclude_rated(world: World, family: str) -> None:
    ratings = copied(world, 8)
    folded = fold_in(world.models[family], ratings, world.maps)
    table = folded.recommend(world.maps, world.movies, 10)
    assert table.schema == RECOMMENDATIONS_SCHEMA and table.num_rows == 10
    assert not set(table.column(S.ITEM_ID).to_pylist()) & set(
        ratings.column(S.ITEM_ID).to_pylist())
    everything = folded.recommend(world.maps, world.movies, N_ITEMS)
    assert everything.num_rows == N_ITEMS - ratings.num_rows


def test_mapping_input_and_unknown_ids(world: World) -> None:
    mine = copied(world, 2)
    mapping = dict(zip(mine.column(S.ITEM_ID).to_pylist(), mine.column(S.RATING).to_pylist(),
                       strict=True))
    from_table = fold_in(world.models["mf"], mine, world.maps)
    assert torch.equal(fold_in(world.models["mf"], mapping, world.maps).scores, from_table.scores)
    with pytest.raises(ValueError, match=r"unknown to the model: \[8\]"):
        fold_in(world.models["mf"], {**mapping, 8: 4.0}, world.maps)
    skipped = fold_in(world.models["mf"], {**mapping, 8: 4.0}, world.maps,
                      FoldInConfig(unknown="skip"))
    assert skipped.skipped_item_ids == (8,)
    torch.testing.assert_close(skipped.scores, from_table.scores)


@pytest.mark.parametrize(("ratings", "message"), [
    ({}, "no ratings"), ({int(ITEM_IDS[0]): float("nan")}, "non-finite"),
])
def test_bad_ratings(world: World, ratings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fold_in(world.models["mf"], ratings, world.maps)


def test_repeated_item_rejected(world: World) -> None:
    table = pa.table({S.ITEM_ID: pa.array([int(ITEM_IDS[1])] * 2, S.ID_TYPE),
                      S.RATING: pa.array([3.0, 4.0], S.RATING_TYPE)})
    with pytest.raises(ValueError, match=f"more than once: \\[{ITEM_IDS[1]}\\]"):
        fold_in(world.models["mf"], table, world.maps)
