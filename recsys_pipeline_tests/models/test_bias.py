"""Bias ALS on a hand-computed 3×4 example, convergence to the ridge optimum, popularity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_pipeline.evaluation.rating import evaluate_ratings
from recsys_pipeline.models.bias import BiasConfig, BiasModel
from recsys_pipeline.models.popularity import PopularityConfig, PopularityModel
from recsys_pipeline.training.data import RatingData

# 3 users × 4 items, 8 ratings ("." = unrated):
#        i0  i1  i2  i3
#   u0    4   2   .   5
#   u1    3   .   4   .
#   u2    .   1   5   4
USERS = [0, 0, 0, 1, 1, 2, 2, 2]
ITEMS = [0, 1, 3, 0, 2, 1, 2, 3]
RATINGS = [4.0, 2.0, 5.0, 3.0, 4.0, 1.0, 5.0, 4.0]


@pytest.fixture
def small() -> RatingData:
    return RatingData.from_arrays(USERS, ITEMS, RATINGS)


def test_one_sweep_matches_hand_computation_with_damping(small: RatingData) -> None:
    # μ = 28 / 8 = 3.5. Item residuals r − μ: i0 {.5, −.5} = 0, i1 {−1.5, −2.5} = −4,
    # i2 {.5, 1.5} = 2, i3 {1.5, .5} = 2; each item has 2 ratings, λ_i = 2:
    #   b_i = [0/4, −4/4, 2/4, 2/4] = [0, −1, .5, .5]
    # user residuals r − μ − b_i, λ_u = 1:
    #   u0: (4−3.5−0) + (2−3.5+1) + (5−3.5−.5) = .5 − .5 + 1 = 1    → 1 / (3+1)  = .25
    #   u1: (3−3.5−0) + (4−3.5−.5)             = −.5 + 0   = −.5   → −.5 / (2+1) = −1/6
    #   u2: (1−3.5+1) + (5−3.5−.5) + (4−3.5−.5) = −1.5 + 1 + 0 = −.5 → −.5 / (3+1) = −.125
    config = BiasConfig(damping_user=1.0, damping_item=2.0, iterations=1)
    model = BiasModel.fit(small, 3, 4, config)
    assert float(model.global_mean) == pytest.approx(3.5)
    torch.testing.assert_close(model.item_bias, torch.tensor([0.0, -1.0, 0.5, 0.5]))
    torch.testing.assert_close(model.user_bias, torch.tensor([0.25, -1 / 6, -0.125]))
    # r̂(u0, i2) = 3.5 + .25 + .5 = 4.25;  r̂(u1, i1) = 3.5 − 1/6 − 1 = 2.3333
    pred = model.score(torch.tensor([0, 1]), torch.tensor([2, 1]))
    torch.testing.assert_close(pred, torch.tensor([4.25, 3.5 - 1 / 6 - 1.0]))


def test_one_sweep_without_damping(small: RatingData) -> None:
    # λ = 0: b_i = [0/2, −4/2, 2/2, 2/2] = [0, −2, 1, 1]
    #   u0: .5 + (2−3.5+2) + (5−3.5−1) = .5 + .5 + .5 = 1.5 → .5
    #   u1: −.5 + (4−3.5−1) = −1 → −.5;   u2: (1−3.5+2) + .5 + (4−3.5−1) = −.5 → −1/6
    model = BiasModel.fit(small, 3, 4, BiasConfig(damping_user=0, damping_item=0, iterations=1))
    torch.testing.assert_close(model.item_bias, torch.tensor([0.0, -2.0, 1.0, 1.0]))
    torch.testing.assert_close(model.user_bias, torch.tensor([0.5, -0.5, -1 / 6]))


def test_sweeps_converge_to_the_damped_least_squares_optimum(small: RatingData) -> None:
    lam_u, lam_i = 1.5, 0.7
    model = BiasModel.fit(small, 3, 4, BiasConfig(damping_user=lam_u, damping_item=lam_i,
                                                  iterations=500, tol=1e-12))
    # ridge normal equations: (XᵀX + diag(λ)) b = Xᵀ(r − μ), X = [user one-hot | item one-hot]
    x = np.zeros((8, 7))
    x[np.arange(8), USERS] = 1.0
    x[np.arange(8), 3 + np.array(ITEMS)] = 1.0
    reg = np.diag([lam_u] * 3 + [lam_i] * 4)
    b = np.linalg.solve(x.T @ x + reg, x.T @ (np.array(RATINGS) - 3.5))
    np.testing.assert_allclose(model.user_bias.numpy(), b[:3], atol=1e-5)
    np.testing.assert_allclose(model.item_bias.numpy(), b[3:], atol=1e-5)


def test_unrated_item_gets_zero_bias_and_clamping_applies() -> None:
    data = RatingData.from_arrays([0, 0, 1], [0, 1, 0], [5.0, 5.0, 4.0])
    model = BiasModel.fit(data, 2, 3, BiasConfig(damping_user=0, damping_item=0, rating_max=4.5))
    assert float(model.item_bias[2]) == 0.0
    assert torch.isfinite(model.score_all(torch.arange(2))).all()
    assert float(model.score_all(torch.arange(2)).max()) == 4.5


def test_bias_fit_rejects_out_of_range_ids(small: RatingData) -> None:
    with pytest.raises(ValueError, match="item_idx.*index 3 >= n=3"):
        BiasModel.fit(small, 3, 3)


def test_popularity_counts_by_hand(small: RatingData) -> None:
    # ratings per item: i0 2, i1 2, i2 2, i3 2; ratings >= 4: i0 1 (4), i1 0, i2 2, i3 2
    model = PopularityModel.fit(small, 3, 4, PopularityConfig(min_rating=4.0))
    assert model.score_all(torch.tensor([2])).tolist() == [[1.0, 0.0, 2.0, 2.0]]
    assert model.score(torch.tensor([0, 1]), torch.tensor([3, 1])).tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="does not predict ratings"):
        evaluate_ratings(model, small)
