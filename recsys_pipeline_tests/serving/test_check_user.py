"""check_user against numbers worked out by hand on a hand-set bias model.

Model: μ = 3, user biases (ids 10, 20, 30) = (0.5, −0.5, 0), item biases (ids 100, 101, 102,
103) = (0, 1, −1, 0.25). Held-out rows and their predictions μ + b_u + b_i:

    user 10: item 100 r=4   t=3 → 3.5 (err −0.5)
             item 101 r=5   t=1 → 4.5 (err −0.5)
             item 102 r=2   t=2 → 2.5 (err +0.5)
    user 20: item 100 r=2   t=5 → 2.5 (err +0.5)
             item 103 r=3.5 t=4 → 2.75 (err −0.75)

User 10: RMSE = MAE = 0.5. Whole table: MSE = (4 · 0.25 + 0.5625) / 5 = 0.3125, so
RMSE = √0.3125 = 0.5590170, MAE = (4 · 0.5 + 0.75) / 5 = 0.55.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps, encode_ids
from recsys_pipeline.models.bias import BiasModel
from recsys_pipeline.models.popularity import PopularityModel
from recsys_pipeline.serving.check_user import CHECK_SCHEMA, check_user, held_out_errors


def ratings_table(rows: list[tuple[int, int, float, int]]) -> pa.Table:
    users, items, ratings, times = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [pa.array(users, S.ID_TYPE), pa.array(items, S.ID_TYPE), pa.array(ratings, S.RATING_TYPE),
         pa.array(times, pa.int64()).cast(S.TIMESTAMP_TYPE)], schema=S.RATINGS_SCHEMA)


HELD_OUT = ratings_table([(10, 100, 4.0, 3), (10, 101, 5.0, 1), (10, 102, 2.0, 2),
                          (20, 100, 2.0, 5), (20, 103, 3.5, 4)])
MOVIES = pa.Table.from_pylist(
    [{"item_id": 100 + i, "title": f"M{i} (200{i})", "year": 2000 + i, "genres": ["Drama"]}
     for i in range(4)], schema=S.MOVIES_SCHEMA)


@pytest.fixture(scope="module")
def hand() -> tuple[BiasModel, IdMaps]:
    every = ratings_table([(u, i, 3.0, 0) for u in (10, 20, 30) for i in (100, 101, 102, 103)])
    _, maps = encode_ids(every, MOVIES)
    model = BiasModel(3, 4)
    model.global_mean.fill_(3.0)
    model.user_bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
    model.item_bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.25]))
    return model.eval(), maps


def test_latest_rows_and_errors_by_hand(hand: tuple[BiasModel, IdMaps]) -> None:
    model, maps = hand
    check = check_user(model, maps, MOVIES, HELD_OUT, 10, p=2, latest=True)
    assert check.table.schema == CHECK_SCHEMA
    rows = check.table.to_pylist()
    assert [r[S.ITEM_ID] for r in rows] == [100, 102]  # t=3 then t=2
    assert [r[S.TITLE] for r in rows] == ["M0 (2000)", "M2 (2002)"]
    assert [r["rating"] for r in rows] == [4.0, 2.0]
    assert [r["predicted"] for r in rows] == pytest.approx([3.5, 2.5])
    assert [r["error"] for r in rows] == pytest.approx([-0.5, 0.5])
    assert check.n_user_ratings == 3
    assert check.user_rmse == pytest.approx(0.5) and check.user_mae == pytest.approx(0.5)
    assert check.model_rmse == pytest.approx(math.sqrt(0.3125))
    assert check.model_mae == pytest.approx(0.55)
    assert check.n_ratings == 5


def test_other_user_by_hand(hand: tuple[BiasModel, IdMaps]) -> None:
    model, maps = hand
    check = check_user(model, maps, MOVIES, HELD_OUT, 20, p=5, latest=True)
    assert [r[S.ITEM_ID] for r in check.table.to_pylist()] == [100, 103]  # all it has
    assert check.user_rmse == pytest.approx(math.sqrt((0.25 + 0.5625) / 2))
    assert check.user_mae == pytest.approx(0.625)
    assert held_out_errors(model, maps, HELD_OUT) == pytest.approx((math.sqrt(0.3125), 0.55))


def test_seeded_sample(hand: tuple[BiasModel, IdMaps]) -> None:
    model, maps = hand
    picks = {seed: check_user(model, maps, MOVIES, HELD_OUT, 10, p=2, seed=seed)
             .table.column(S.ITEM_ID).to_pylist() for seed in range(8)}
    assert all(len(v) == 2 and set(v) <= {100, 101, 102} for v in picks.values())
    assert len({tuple(sorted(v)) for v in picks.values()}) > 1  # the seed matters
    again = check_user(model, maps, MOVIES, HELD_OUT, 10, p=2, seed=3)
    assert again.table.column(S.ITEM_ID).to_pylist() == picks[3]


@pytest.mark.parametrize(("user_id", "p", "message"), [
    (30, 2, "user_id 30 has no rating in the held-out table"), (10, 0, "p=0"),
])
def test_rejects(hand: tuple[BiasModel, IdMaps], user_id: int, p: int, message: str) -> None:
    model, maps = hand
    with pytest.raises(ValueError, match=message):
        check_user(model, maps, MOVIES, HELD_OUT, user_id, p)


def test_ranking_model_rejected(hand: tuple[BiasModel, IdMaps]) -> None:
    _, maps = hand
    with pytest.raises(ValueError, match="does not predict ratings"):
        check_user(PopularityModel(3, 4), maps, MOVIES, HELD_OUT, 10, 2)


# A held-out table newer than the model (a retrain the champion gate kept out): user 40 and
# movie 999 are unknown to it. User 40's training rows: items 100 and 101 rated 5, so the bias
# fold-in gives b_u = ((5 − 3 − 0) + (5 − 3 − 1)) / (2 + λ_u = 5) = 3/7, and their held-out
# movie 102 is predicted 3 + 3/7 − 1 = 2.428571 (rating 3: error −0.571429).
NEWER = pa.concat_tables([HELD_OUT, ratings_table([(40, 102, 3.0, 7), (40, 999, 4.0, 8),
                                                   (10, 999, 1.0, 9)])])
TRAIN_40 = ratings_table([(40, 100, 5.0, 1), (40, 101, 5.0, 2), (10, 100, 1.0, 1)])


def test_rows_the_model_does_not_know_are_left_out_of_its_figures(
        hand: tuple[BiasModel, IdMaps]) -> None:
    model, maps = hand
    check = check_user(model, maps, MOVIES, NEWER, 10, p=5, latest=True)
    assert [r[S.ITEM_ID] for r in check.table.to_pylist()] == [100, 102, 101]  # not 999
    assert check.skipped_items == 1 and check.n_user_ratings == 3 and check.folded_in == 0
    assert check.user_rmse == pytest.approx(0.5)
    assert check.model_rmse == pytest.approx(math.sqrt(0.3125))  # the five known rows only
    assert (check.n_ratings, check.n_left_out) == (5, 3)
    assert held_out_errors(model, maps, NEWER) == pytest.approx((math.sqrt(0.3125), 0.55))


def test_a_user_the_model_lacks_is_folded_in_from_training_rows(
        hand: tuple[BiasModel, IdMaps]) -> None:
    model, maps = hand
    check = check_user(model, maps, MOVIES, NEWER, 40, p=5, train_table=TRAIN_40)
    assert check.folded_in == 2 and check.skipped_items == 1 and check.n_user_ratings == 1
    (row,) = check.table.to_pylist()
    assert row[S.ITEM_ID] == 102 and row["rating"] == 3.0
    assert row["predicted"] == pytest.approx(3 + 3 / 7 - 1)
    assert row["error"] == pytest.approx(3 / 7 - 1)
    assert check.user_rmse == pytest.approx(1 - 3 / 7) and check.user_mae == pytest.approx(4 / 7)
    assert check.model_rmse == pytest.approx(math.sqrt(0.3125))
    # the model itself is untouched: user 10 is predicted as before
    again = check_user(model, maps, MOVIES, NEWER, 10, p=5, latest=True)
    assert again.table.column("predicted").to_pylist() == pytest.approx([3.5, 2.5, 4.5])


@pytest.mark.parametrize(("user_id", "train", "message"), [
    (40, None, "user_id 40 is not one of the 3 users the model was trained on, and has no "
               "training ratings to fold in"),
    (40, TRAIN_40.slice(2), "no training ratings to fold in"),  # only user 10's row
])
def test_a_user_the_model_lacks_without_training_rows(hand: tuple[BiasModel, IdMaps],
                                                      user_id: int, train: pa.Table | None,
                                                      message: str) -> None:
    model, maps = hand
    with pytest.raises(ValueError, match=message):
        check_user(model, maps, MOVIES, NEWER, user_id, 2, train_table=train)


def test_only_unknown_movies_or_rows(hand: tuple[BiasModel, IdMaps]) -> None:
    model, maps = hand
    only_new = ratings_table([(10, 999, 4.0, 1), (40, 998, 3.0, 2)])
    with pytest.raises(ValueError, match="none of user_id 10's 1 held-out movies"):
        check_user(model, maps, MOVIES, only_new, 10, 2)
    with pytest.raises(ValueError, match="none of the 2 held-out rows"):
        held_out_errors(model, maps, only_new)
