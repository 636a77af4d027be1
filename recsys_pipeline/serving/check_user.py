"""Check a model on one user: held-out ratings beside the model's predictions.

``error = predicted − actual``; the user's RMSE / MAE over all their held-out ratings is set
against the model's RMSE / MAE over the whole held-out table, so a reader sees whether the
model does better or worse than usual for this person.
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
from recsys_pipeline.models.base import RatingModel
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
        model_rmse: RMSE over the whole held-out table.
        model_mae: MAE over the whole held-out table.
        n_ratings: Rows of the held-out table.
    """

    user_id: int
    table: pa.Table
    n_user_ratings: int
    user_rmse: float
    user_mae: float
    model_rmse: float
    model_mae: float
    n_ratings: int


def _predict_rows(model: RatingModel, maps: IdMaps, table: pa.Table) -> tuple[RatingData,
                                                                             torch.Tensor]:
    """The table as RatingData on the model's device and the model's prediction per row."""
    users = maps.to_user_idx(table.column(S.USER_ID).to_numpy())
    items = maps.to_item_idx(table.column(S.ITEM_ID).to_numpy())
    data = RatingData.from_arrays(users, items, table.column(S.RATING), n_users=maps.n_users,
                                  n_items=maps.n_items, device=model_device(model))
    return data, predict(model, data)


def held_out_errors(model: RatingModel, maps: IdMaps, held_out: pa.Table) -> tuple[float, float]:
    """``(RMSE, MAE)`` of the model over a held-out table in original ids.

    Args:
        model: A rating model (``predicts_ratings``).
        maps: Its id maps.
        held_out: Rows with ``user_id``, ``item_id`` and ``rating``.

    Returns:
        ``(√(mean (r̂ − r)²), mean |r̂ − r|)``.
    """
    _check_inputs(model, maps, held_out)
    data, pred = _predict_rows(model, maps, held_out)
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

    Returns:
        The :class:`UserCheck`.

    Raises:
        ValueError: The user has no held-out rating, ``p < 1``, unknown ids, a model that
            does not predict ratings, or missing columns.
    """
    _check_inputs(model, maps, held_out_table)
    if p < 1:
        raise ValueError(f"p={p} must be >= 1")
    mine = held_out_table.filter(pc.equal(held_out_table.column(S.USER_ID), user_id))
    if mine.num_rows == 0:
        raise ValueError(f"user_id {user_id} has no rating in the held-out table "
                         f"({held_out_table.num_rows} rows)")
    data, pred = _predict_rows(model, maps, mine)
    model_rmse, model_mae = overall or held_out_errors(model, maps, held_out_table)
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
        model_rmse=float(model_rmse), model_mae=float(model_mae),
        n_ratings=held_out_table.num_rows,
    )
