"""Column names and Arrow schemas of the serving tables, and the movie details join.

The canonical input columns (``user_id``, ``item_id``, ``title`` ...) come from
``recsys_pipeline.schema``; the few columns only serving produces (``rank``, ``score`` ...)
are named here, beside the schemas that use them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from torch import nn

from recsys_pipeline import schema as S
from recsys_pipeline.data.encode import IdMaps

RANK = "rank"  # 1-based position in a list
SCORE = "score"  # the model's score: a predicted rating for rating models
PREDICTED = "predicted"  # predicted rating of a rated / held-out item
ERROR = "error"  # predicted − actual
SIMILARITY = "similarity"  # user·item dot product or item–item cosine
MODEL_RANK = "model_rank"  # rank of the item under the full model's scores (1 = best)

MOVIE_FIELDS = [
    pa.field(S.ITEM_ID, S.ID_TYPE, nullable=False),
    pa.field(S.TITLE, pa.string()),
    pa.field(S.YEAR, pa.int16()),
    pa.field(S.GENRES, pa.list_(pa.string())),
]
RECOMMENDATIONS_SCHEMA = pa.schema(
    [pa.field(RANK, pa.int32(), nullable=False), *MOVIE_FIELDS,
     pa.field(SCORE, pa.float32(), nullable=False)]
)
USER_TOP_K_SCHEMA = pa.schema(
    [
        pa.field(S.USER_ID, S.ID_TYPE, nullable=False),
        pa.field(RANK, pa.int32(), nullable=False),
        pa.field(S.ITEM_ID, S.ID_TYPE, nullable=False),
        pa.field(SCORE, pa.float32(), nullable=False),
    ]
)
EMBEDDING_RECOMMENDATIONS_SCHEMA = pa.schema(
    [pa.field(RANK, pa.int32(), nullable=False), *MOVIE_FIELDS,
     pa.field(SIMILARITY, pa.float32(), nullable=False),
     pa.field(PREDICTED, pa.float32(), nullable=False),
     pa.field(MODEL_RANK, pa.int32(), nullable=False)]
)
SIMILAR_ITEMS_SCHEMA = pa.schema(
    [pa.field(RANK, pa.int32(), nullable=False), *MOVIE_FIELDS,
     pa.field(SIMILARITY, pa.float32(), nullable=False)]
)


def movie_details(item_ids: np.ndarray, movies: pa.Table, maps: IdMaps | None = None) -> pa.Table:
    """``item_id, title, year, genres`` of each id, in the given order (one vectorised join).

    Args:
        item_ids: Original MovieLens item ids.  # [n]
        movies: ``schema.MOVIES_SCHEMA`` table.
        maps: When given, its item-map title fills in ids the movies table lacks.

    Returns:
        A table with ``MOVIE_FIELDS``; year and genres are null where ``movies`` lacks the id.
    """
    ids = pa.array(np.asarray(item_ids), S.ID_TYPE)
    pos = pc.index_in(ids, value_set=movies.column(S.ITEM_ID).combine_chunks())
    title = movies.column(S.TITLE).combine_chunks().take(pos)
    if maps is not None and title.null_count:
        fallback = maps.items.column(S.TITLE).combine_chunks().take(
            pc.index_in(ids, value_set=maps.items.column(S.ITEM_ID).combine_chunks()))
        title = pc.coalesce(title, fallback)
    year = movies.column(S.YEAR).combine_chunks().take(pos).cast(pa.int16())
    genres = movies.column(S.GENRES).combine_chunks().take(pos)
    return pa.Table.from_arrays([ids, title, year, genres], schema=pa.schema(MOVIE_FIELDS))


def ranked_table(item_ids: np.ndarray, movies: pa.Table, maps: IdMaps | None,
                 extra: dict[str, np.ndarray], out_schema: pa.Schema) -> pa.Table:
    """``rank`` 1..n, the movie details of ``item_ids`` (best first), then ``extra`` columns."""
    details = movie_details(item_ids, movies, maps)
    rank = pa.array(np.arange(1, len(item_ids) + 1, dtype=np.int32))
    columns = [rank, *details.columns, *(pa.array(v) for v in extra.values())]
    return pa.Table.from_arrays(columns, names=out_schema.names).cast(out_schema)


def check_model_maps(model: nn.Module, maps: IdMaps) -> None:
    """Raise ValueError unless the model's index space is the id maps' (same sizes)."""
    n_users, n_items = int(model.n_users), int(model.n_items)
    if (n_users, n_items) != (maps.n_users, maps.n_items):
        raise ValueError(f"{type(model).__name__} has n_users={n_users}, n_items={n_items} but "
                         f"the id maps have {maps.n_users} users and {maps.n_items} items: "
                         "the model was trained on other prepared data (prepare_job ran "
                         "again since?); retrain it (dagster job execute -m "
                         "recsys_pipeline.definitions -j train_job), or use the maps it was "
                         "trained with")


def one_item_idx(maps: IdMaps, item_id: int, movies: pa.Table) -> int:
    """The ``item_idx`` of one original ``item_id``; a ValueError naming an unknown id says
    whether it is a movie of ``movies`` the model never trained on, or no movie at all."""
    try:
        return int(maps.to_item_idx(np.asarray([item_id], dtype=np.int64))[0])
    except ValueError:
        pass
    rows = movies.filter(pc.equal(movies.column(S.ITEM_ID), item_id))
    why = (f"{rows.column(S.TITLE)[0].as_py()!r} had no training ratings when the model was "
           "trained" if rows.num_rows else "no movie of the lake has that movieId")
    raise ValueError(f"unknown item_id {item_id}: not one of the model's {maps.n_items} "
                     f"movies ({why})") from None


def one_user_idx(maps: IdMaps, user_id: int) -> int:
    """The ``user_idx`` of one original ``user_id`` (ValueError naming an unknown id)."""
    try:
        return int(maps.to_user_idx(np.asarray([user_id], dtype=np.int64))[0])
    except ValueError:
        raise ValueError(f"unknown user_id {user_id}: not one of the model's {maps.n_users} "
                         "users (it had no training ratings when the model was trained): "
                         "retrain, or fold the user in with new-user --ratings") from None
