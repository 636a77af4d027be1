"""Canonical column names and Arrow schemas: the only place column strings live.

Every MovieLens release is read into these schemas, whatever its on-disk format, so every
later stage (filtering, encoding, splits, models) sees one shape of data.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

# --- column names -------------------------------------------------------------------------
USER_ID = "user_id"
ITEM_ID = "item_id"
RATING = "rating"
TIMESTAMP = "timestamp"
TITLE = "title"
YEAR = "year"
GENRES = "genres"
TAG = "tag"
IMDB_ID = "imdb_id"
TMDB_ID = "tmdb_id"
GENDER = "gender"
AGE = "age"
OCCUPATION = "occupation"
ZIP_CODE = "zip_code"

# after id encoding (prepared stage)
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"

# --- Arrow types ----------------------------------------------------------------------------
ID_TYPE = pa.int32()
RATING_TYPE = pa.float32()
TIMESTAMP_TYPE = pa.timestamp("s", tz="UTC")
# MovieLens began collecting ratings in 1995; nothing can be rated in the future. Readers refuse
# timestamps outside [EARLIEST_TIMESTAMP, now] (e.g. milliseconds), as the asset check does.
EARLIEST_TIMESTAMP = dt.datetime(1995, 1, 1, tzinfo=dt.UTC)


def timestamp_range_message(value: int) -> str:
    """Why Unix time ``value`` (seconds) is refused, for errors that name the file and line."""
    hint = " (milliseconds? MovieLens timestamps are Unix seconds)" if value > 1e11 else ""
    return (f"timestamp {value} is outside {EARLIEST_TIMESTAMP:%Y-%m-%d}..now as Unix "
            f"seconds{hint}")


def timestamp_bounds() -> tuple[int, int]:
    """[EARLIEST_TIMESTAMP, now] as Unix seconds."""
    return int(EARLIEST_TIMESTAMP.timestamp()), int(dt.datetime.now(dt.UTC).timestamp())


def timestamp_out_of_range(seconds: int) -> bool:
    """Whether Unix time ``seconds`` lies outside [EARLIEST_TIMESTAMP, now]."""
    lo, hi = timestamp_bounds()
    return not lo <= seconds <= hi


def timestamps_out_of_range(ts: pa.Array | pa.ChunkedArray,
                            latest: dt.datetime | None = None) -> pa.ChunkedArray:
    """Per value: whether a timestamp (Unix seconds, or an Arrow timestamp of any unit) lies
    outside [EARLIEST_TIMESTAMP, ``latest`` or now]; null is never out of range. The check
    readers and the lake's asset check share."""
    if pa.types.is_timestamp(ts.type):
        ts = pc.cast(ts, pa.timestamp("s", tz="UTC"), safe=False)
    seconds = pc.cast(ts, pa.int64())
    lo, hi = timestamp_bounds()
    hi = hi if latest is None else int(latest.timestamp())
    bad = pc.fill_null(pc.or_(pc.less(seconds, lo), pc.greater(seconds, hi)), False)
    return bad if isinstance(bad, pa.ChunkedArray) else pa.chunked_array([bad])

RATINGS_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, ID_TYPE, nullable=False),
        pa.field(ITEM_ID, ID_TYPE, nullable=False),
        pa.field(RATING, RATING_TYPE, nullable=False),
        pa.field(TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
    ]
)

MOVIES_SCHEMA = pa.schema(
    [
        pa.field(ITEM_ID, ID_TYPE, nullable=False),
        pa.field(TITLE, pa.string()),
        pa.field(YEAR, pa.int16()),  # parsed from "Title (1995)"; null where the title has none
        pa.field(GENRES, pa.list_(pa.string())),  # [] for "(no genres listed)"
    ]
)

TAGS_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, ID_TYPE, nullable=False),
        pa.field(ITEM_ID, ID_TYPE, nullable=False),
        pa.field(TAG, pa.string()),
        pa.field(TIMESTAMP, TIMESTAMP_TYPE),
    ]
)

LINKS_SCHEMA = pa.schema(
    [
        pa.field(ITEM_ID, ID_TYPE, nullable=False),
        pa.field(IMDB_ID, pa.string()),  # kept as text: "0114709" has meaningful leading zeros
        pa.field(TMDB_ID, pa.int32()),  # null where the release leaves it empty
    ]
)

USERS_SCHEMA = pa.schema(
    [
        pa.field(USER_ID, ID_TYPE, nullable=False),
        pa.field(GENDER, pa.string()),
        pa.field(AGE, pa.int16()),  # ml-1m: the age-group code (1, 18, 25, ...); ml-100k: years
        pa.field(OCCUPATION, pa.string()),
        pa.field(ZIP_CODE, pa.string()),
    ]
)

# table name -> schema, in lake order
TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "ratings": RATINGS_SCHEMA,
    "movies": MOVIES_SCHEMA,
    "tags": TAGS_SCHEMA,
    "links": LINKS_SCHEMA,
    "users": USERS_SCHEMA,
}
TABLES: tuple[str, ...] = tuple(TABLE_SCHEMAS)


def empty_table(name: str) -> pa.Table:
    """An empty table with the canonical schema of ``name`` (for tables a release lacks)."""
    return TABLE_SCHEMAS[name].empty_table()


# --- prepared stage: encoded ratings, id maps, splits, sequences (appended) ----------------------
ITEM_IDX_SEQ = "item_idx_seq"  # list<int32> of item_idx, oldest first
SEQ_LEN = "seq_len"
TARGET_ITEM_IDX = "target_item_idx"
SPLIT = "split"

IDX_TYPE = pa.int32()

ENCODED_RATINGS_SCHEMA = pa.schema(
    [
        pa.field(USER_IDX, IDX_TYPE, nullable=False),
        pa.field(ITEM_IDX, IDX_TYPE, nullable=False),
        pa.field(USER_ID, ID_TYPE, nullable=False),
        pa.field(ITEM_ID, ID_TYPE, nullable=False),
        pa.field(RATING, RATING_TYPE, nullable=False),
        pa.field(TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
    ]
)

USER_MAP_SCHEMA = pa.schema(
    [pa.field(USER_IDX, IDX_TYPE, nullable=False), pa.field(USER_ID, ID_TYPE, nullable=False)]
)

ITEM_MAP_SCHEMA = pa.schema(
    [
        pa.field(ITEM_IDX, IDX_TYPE, nullable=False),
        pa.field(ITEM_ID, ID_TYPE, nullable=False),
        pa.field(TITLE, pa.string()),  # null where no movies table was given or the id lacks one
    ]
)

# split tables in canonical order; "*_fold_in" hold the rows of held-out users a model may see
# at evaluation time (non-empty only for strong generalization); valid/test are predicted.
TRAIN = "train"
VALID_FOLD_IN = "valid_fold_in"
VALID = "valid"
TEST_FOLD_IN = "test_fold_in"
TEST = "test"
SPLIT_NAMES: tuple[str, ...] = (TRAIN, VALID_FOLD_IN, VALID, TEST_FOLD_IN, TEST)

SEQUENCES_SCHEMA = pa.schema(
    [
        pa.field(USER_IDX, IDX_TYPE, nullable=False),
        pa.field(ITEM_IDX_SEQ, pa.list_(IDX_TYPE), nullable=False),
        pa.field(SEQ_LEN, pa.int32(), nullable=False),
    ]
)

NEXT_ITEM_SCHEMA = pa.schema(
    [*SEQUENCES_SCHEMA, pa.field(TARGET_ITEM_IDX, IDX_TYPE, nullable=False)]
)
