"""Check a model on one user: held-out ratings beside the model's predictions.

``error = predicted − actual``; the user's RMSE / MAE over all their held-out ratings is set
against the model's RMSE / MAE over the whole held-out table, so a reader sees whether the
model does better or worse than usual for this person.

The held-out table may be newer than the model (a retrain whose challenger the champion gate
kept out, after ``new-user --persist`` or a new release): rows of users or movies the model
was not trained on are left out of its figures and counted, and a user it does not know is
folded in from their training-split ratings (as ``new-user`` does), never from the held-out
rows being checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps
from recsys_pipeline.evaluation.rating import mae, predict, rmse
from recsys_pipeline.evaluation.rescore import known_pairs
from recsys_pipeline.models.base import RatingModel
from recsys_pipeline.serving.fold_in import FoldInConfig, fold_in
from recsys_pipeline.serving.tables import (
    ERROR,
    MOVIE_FIELDS,
    PREDICTED,
    check_model_maps,
    movie_details,
)
from recsys_pipeline.training.data import RatingData
from recsys_pipeline.training.device import model_device
from recsys_pipeline.training.seed import numpy_generator

CHECK_SCHEMA = pa.schema(
    [
        *MOVIE_FIELDS,
        pa.field(S.TIMESTAMP, S.TIMESTAMP_TYPE, nullable=False),
        pa.field(S.RATING, S.RATING_TYPE, nullable=False),
        pa.field(PREDICTED, pa.float32(), nullable=False),
        pa.field(ERROR, pa.float32(), nullable=False),
    ]
)
_NEEDED = (S.USER_ID, S.ITEM_ID, S.RATING, S.TIMESTAMP)


@dataclass(frozen=True)
class UserCheck:
    """What :func:`check_user` returns.

    Attributes:
        user_id: The original user id.
        table: ``CHECK_SCHEMA`` rows (item_id, title, year, genres, timestamp, rating,
            predicted, error), newest first.
        n_user_ratings: The user's held-out ratings (the shown rows are some of them).
        user_rmse: ``√(mean (r̂ − r)²)`` over all the user's held-out ratings.
        user_mae: ``mean |r̂ − r|`` over the same.
        model_rmse: RMSE over the held-out rows the model knows (user and movie).
        model_mae: MAE over the same.
        n_ratings: Those rows.
        n_left_out: Held-out rows of users or movies the model was not trained on, left out
            of ``model_rmse`` / ``model_mae``.
        folded_in: 0 when the model was trained on the user; else the number of their
            training-split ratings folded in to predict the held-out ones.
        skipped_items: The user's held-out ratings of movies the model does not know (not
            shown, not in ``n_user_ratings``).
    """

    user_id: int
    table: pa.Table
    n_user_ratings: int
    user_rmse: float
    user_mae: float
    model_rmse: float
    model_mae: float
    n_ratings: int
    n_left_out: int = 0
    folded_in: int = 0
    skipped_items: int = 0


def _known_rows(maps: IdMaps, table: pa.Table) -> pa.Table:
    """The rows whose user and movie the model's id maps both know."""
    mask = known_pairs(table.column(S.USER_ID).to_numpy(), table.column(S.ITEM_ID).to_numpy(),
                       maps)[0]
    return table.filter(pa.array(mask))


def _predict_rows(model: RatingModel, maps: IdMaps, table: pa.Table) -> tuple[RatingData,
                                                                             torch.Tensor]:
    """The table as RatingData on the model's device and the model's prediction per row."""
    users = maps.to_user_idx(table.column(S.USER_ID).to_numpy())
    items = maps.to_item_idx(table.column(S.ITEM_ID).to_numpy())
    data = RatingData.from_arrays(users, items, table.column(S.RATING), n_users=maps.n_users,
                                  n_items=maps.n_items, device=model_device(model))
    return data, predict(model, data)


def held_out_errors(model: RatingModel, maps: IdMaps, held_out: pa.Table) -> tuple[float, float]:
    """``(RMSE, MAE)`` of the model over the rows of a held-out table (original ids) whose
    user and movie it knows.

    Args:
        model: A rating model (``predicts_ratings``).
        maps: Its id maps.
        held_out: Rows with ``user_id``, ``item_id`` and ``rating``.

    Returns:
        ``(√(mean (r̂ − r)²), mean |r̂ − r|)``.

    Raises:
        ValueError: No row the model knows, or the input checks of :func:`check_user`.
    """
    _check_inputs(model, maps, held_out)
    return _errors(model, maps, _known_rows(maps, held_out), held_out.num_rows)


def _errors(model: RatingModel, maps: IdMaps, known: pa.Table, n_rows: int
            ) -> tuple[float, float]:
    """``(RMSE, MAE)`` over ``known``, the ``n_rows``-row held-out table's rows the model
    knows."""
    if known.num_rows == 0:
        raise ValueError(f"none of the {n_rows} held-out rows is of a user and movie the "
                         "model was trained on")
    data, pred = _predict_rows(model, maps, known)
    return rmse(pred, data.ratings), mae(pred, data.ratings)


def _check_inputs(model: RatingModel, maps: IdMaps, held_out: pa.Table) -> None:
    if not model.predicts_ratings:
        raise ValueError(f"the {model.family} model ranks items but does not predict ratings; "
                         "check-user needs a rating model (bias, mf, mlp, neumf, deepfm)")
    check_model_maps(model, maps)
    missing = [c for c in _NEEDED if c not in held_out.column_names]
    if missing:
        raise ValueError(f"held-out table lacks column(s) {missing}; has {held_out.column_names}")
    if held_out.num_rows == 0:
        raise ValueError("held-out table has no rows")


def _pick_rows(timestamps: np.ndarray, item_ids: np.ndarray, p: int, latest: bool,
               seed: int) -> np.ndarray:
    """Positions of the rows to show: the p newest, or a seeded sample; newest first."""
    n = len(timestamps)
    if latest:
        chosen = np.arange(n)
    else:
        chosen = np.sort(numpy_generator(seed).choice(n, size=min(p, n), replace=False))
    # newest first, ties by item id: lexsort's last key is the primary one
    order = np.lexsort((item_ids[chosen], -timestamps[chosen]))
    return chosen[order][:p]


def check_user(
    model: RatingModel,
    maps: IdMaps,
    movies: pa.Table,
    held_out_table: pa.Table,
    user_id: int,
    p: int,
    latest: bool = False,
    seed: int = 0,
    overall: tuple[float, float] | None = None,
    train_table: pa.Table | None = None,
) -> UserCheck:
    """``p`` movies the user rated in the held-out data: actual vs predicted rating.

    Args:
        model: A trained rating model.
        maps: Its id maps.
        movies: ``schema.MOVIES_SCHEMA`` table.
        held_out_table: Held-out ratings (e.g. the test split) with ``user_id``, ``item_id``,
            ``rating`` and ``timestamp``.
        user_id: Original MovieLens ``userId``.
        p: Rows to show (all of the user's held-out ratings when they have fewer).
        latest: Show the ``p`` newest ratings instead of a seeded random sample.
        seed: Seeds the sample.
        overall: Precomputed :func:`held_out_errors` of this table (skips recomputing it
            when checking many users).
        train_table: Training ratings (``user_id``, ``item_id``, ``rating``; e.g. the train
            split, or just this user's rows of it): a user the model was not trained on is
            folded in from their rows here. None: such a user is an error.

    Returns:
        The :class:`UserCheck`.

    Raises:
        ValueError: The user has no held-out rating of a movie the model knows, ``p < 1``, a
            user the model does not know without training ratings to fold in, a model that
            does not predict ratings, or missing columns.
    """
    _check_inputs(model, maps, held_out_table)
    if p < 1:
        raise ValueError(f"p={p} must be >= 1")
    mine = held_out_table.filter(pc.equal(held_out_table.column(S.USER_ID), user_id))
    if mine.num_rows == 0:
        raise ValueError(f"user_id {user_id} has no rating in the held-out table "
                         f"({held_out_table.num_rows} rows)")
    known_items = pc.is_in(mine.column(S.ITEM_ID), value_set=maps.items.column(S.ITEM_ID))
    skipped = mine.num_rows - pc.sum(known_items).as_py()
    mine = mine.filter(known_items)
    if mine.num_rows == 0:
        raise ValueError(f"none of user_id {user_id}'s {skipped} held-out movies is one the "
                         "model was trained on")
    folded_in = 0
    if maps.has_user(user_id):
        data, pred = _predict_rows(model, maps, mine)
    else:
        folded_in, data, pred = _fold_in_rows(model, maps, mine, user_id, train_table)
    known = _known_rows(maps, held_out_table)
    model_rmse, model_mae = overall or _errors(model, maps, known, held_out_table.num_rows)
    n_known = known.num_rows
    ts = mine.column(S.TIMESTAMP).cast(pa.int64()).to_numpy()
    item_ids = mine.column(S.ITEM_ID).to_numpy()
    rows = _pick_rows(ts, item_ids, p, latest, seed)
    actual = data.ratings.cpu().numpy()[rows]
    predicted = pred.cpu().numpy()[rows]
    details = movie_details(item_ids[rows], movies, maps)
    extra = [mine.column(S.TIMESTAMP).take(pa.array(rows)), pa.array(actual, S.RATING_TYPE),
             pa.array(predicted, pa.float32()), pa.array(predicted - actual, pa.float32())]
    table = pa.Table.from_arrays([*details.columns, *extra], schema=CHECK_SCHEMA)
    return UserCheck(
        user_id=int(user_id), table=table, n_user_ratings=mine.num_rows,
        user_rmse=rmse(pred, data.ratings), user_mae=mae(pred, data.ratings),
        model_rmse=float(model_rmse), model_mae=float(model_mae), n_ratings=n_known,
        n_left_out=held_out_table.num_rows - n_known, folded_in=folded_in,
        skipped_items=skipped,
    )


def _fold_in_rows(model: RatingModel, maps: IdMaps, mine: pa.Table, user_id: int,
                  train_table: pa.Table | None) -> tuple[int, RatingData, torch.Tensor]:
    """A user the model was not trained on: fold in their training ratings, then the folded
    scores of their held-out movies (all known to the model)."""
    theirs = None if train_table is None else train_table.filter(
        pc.equal(train_table.column(S.USER_ID), user_id))
    if theirs is None or theirs.num_rows == 0:
        raise ValueError(f"user_id {user_id} is not one of the {maps.n_users} users the model "
                         "was trained on, and has no training ratings to fold in")
    folded = fold_in(model, theirs, maps, FoldInConfig(unknown="skip"))
    items = maps.to_item_idx(mine.column(S.ITEM_ID).to_numpy())
    data = RatingData.from_arrays(np.zeros(len(items), np.int32), items, mine.column(S.RATING),
                                  n_users=1, n_items=maps.n_items)
    return len(folded.item_idx), data, folded.scores[torch.from_numpy(items.astype(np.int64))]
