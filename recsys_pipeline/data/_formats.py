"""Per-layout MovieLens readers: the raw files of one release -> canonical Arrow tables.

Each table is described by its columns as ``(name in the file, canonical name, kind)``. Big files
(ratings, CSV tables, ml-100k's ``|`` files) go through multi-threaded ``pyarrow.csv``; the small
``::`` files with free text (movies, tags, users) are split in memory with pyarrow string kernels.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from recsys_pipeline import schema as s
from recsys_pipeline.data import _textio as t
from recsys_pipeline.data._textio import UTF8_LATIN1_FALLBACK, LineFormat, Member, decode

Spec = tuple[tuple[str, str | None, str], ...]  # (file column, canonical column or None, kind)
BLOCK_BYTES = 1 << 23  # pyarrow.csv block: big enough to keep both cores busy on 25M rows

# fmt: off
_CSV: dict[str, Spec] = {
    "ratings": (("userId", s.USER_ID, "int32"), ("movieId", s.ITEM_ID, "int32"),
                ("rating", s.RATING, "float"), ("timestamp", s.TIMESTAMP, "unix")),
    "movies": (("movieId", s.ITEM_ID, "int32"), ("title", s.TITLE, "str"),
               ("genres", s.GENRES, "str")),
    "tags": (("userId", s.USER_ID, "int32"), ("movieId", s.ITEM_ID, "int32"),
             ("tag", s.TAG, "str"), ("timestamp", s.TIMESTAMP, "unix")),
    "links": (("movieId", s.ITEM_ID, "int32"), ("imdbId", s.IMDB_ID, "str"),
              ("tmdbId", s.TMDB_ID, "intfloat")),
}
# ml-20m copies with renamed files write timestamps as 'YYYY-MM-DD HH:MM:SS' (UTC)
_RENAMED: dict[str, Spec] = {
    table: tuple((c, n, "datetime" if n == s.TIMESTAMP else k) for c, n, k in spec)
    for table, spec in _CSV.items()
}
_DAT: dict[str, Spec] = {  # field names as in the ml-1m / ml-10m READMEs
    "ratings": (("UserID", s.USER_ID, "int32"), ("MovieID", s.ITEM_ID, "int32"),
                ("Rating", s.RATING, "float"), ("Timestamp", s.TIMESTAMP, "unix")),
    "movies": (("MovieID", s.ITEM_ID, "int32"), ("Title", s.TITLE, "str"),
               ("Genres", s.GENRES, "str")),
    "tags": (("UserID", s.USER_ID, "int32"), ("MovieID", s.ITEM_ID, "int32"),
             ("Tag", s.TAG, "str"), ("Timestamp", s.TIMESTAMP, "unix")),
    "users": (("UserID", s.USER_ID, "int32"), ("Gender", s.GENDER, "str"),
              ("Age", s.AGE, "int16"), ("Occupation", s.OCCUPATION, "int8"),
              ("Zip-code", s.ZIP_CODE, "str")),
}
_DAT_FREE = {"movies": 1, "tags": 2}  # the title / tag may itself contain '::'

# u.genre order (ml-100k README); the 'unknown' flag means no genre
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
_100K: dict[str, Spec] = {  # field names as in the ml-100k README
    "ratings": (("user id", s.USER_ID, "int32"), ("item id", s.ITEM_ID, "int32"),
                ("rating", s.RATING, "float"), ("timestamp", s.TIMESTAMP, "unix")),
    "movies": (("movie id", s.ITEM_ID, "int32"), ("movie title", s.TITLE, "str"),
               ("release date", None, "str"), ("video release date", None, "str"),
               ("IMDb URL", None, "str"), *((genre, None, "int8") for genre in GENRES_100K)),
    "users": (("user id", s.USER_ID, "int32"), ("age", s.AGE, "int16"),
              ("gender", s.GENDER, "str"), ("occupation", s.OCCUPATION, "str"),
              ("zip code", s.ZIP_CODE, "str")),
}

# ml-1m README, users.dat occupation codes 0-20
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
# fmt: on

_YEAR = r"\((?P<year>\d{4})(?:\s*[-–]\s*\d{4})?\)$"  # 'Toy Story (1995)', 'Death Note (2006–2007)'
_NO_GENRES = "(no genres listed)"


class OffScaleError(ValueError):
    """A rating that is not one of the release's allowed values (the message names the line)."""


class Scale(Protocol):
    """The part of ``movielens.RatingScale`` the rating check needs."""

    min: float
    max: float
    step: float

    def allowed_values(self) -> list[float]: ...


Columns = dict[str, pa.Array | pa.ChunkedArray]  # file column -> values
LineOf = Callable[[int], int]  # data record index -> 1-based line number


def read_layout_table(
    layout: str, table: str, member: Member, release: str, scale: Scale
) -> pa.Table:
    """Read one table of a release in ``layout`` into its canonical schema (see movielens)."""
    if layout in ("csv", "csv-renamed"):
        spec = (_CSV if layout == "csv" else _RENAMED)[table]
        fmt = _csv_format(member, spec)
        columns, line_of = _read_csv(member, fmt, spec), _line_finder(member, fmt)
    elif layout == "100k":
        spec = _100K[table]
        sep, encoding = ("\t", "utf-8") if table == "ratings" else ("|", "latin-1")
        fmt = _headerless(spec, sep, encoding=encoding)
        columns, line_of = _read_csv(member, fmt, spec), _line_finder(member, fmt)
    elif table == "ratings":  # dat ratings: no free text, so ':' splits them at full speed
        spec = _DAT[table]
        fmt = _headerless(spec, "::")
        names = [n for c, _, _ in spec for n in (c, f"::{c}")][:-1]
        columns = _read_csv(member, fmt, spec, delimiter=":", names=names)
        line_of = _line_finder(member, fmt)
    else:
        spec = _DAT[table]
        encoding = {"ml-1m": "latin-1", "ml-10m": UTF8_LATIN1_FALLBACK}.get(release, "utf-8")
        fmt = _headerless(spec, "::", encoding=encoding, free=_DAT_FREE.get(table))
        columns, line_of = _read_split(member, fmt)
    out = {canon: columns[col] for col, canon, _ in spec if canon is not None}
    out = _finish(table, layout, out, columns, line_of, member.label)
    if table == "ratings":
        _check_ratings(out[s.RATING], spec[2][0], scale, release, line_of, member.label)
    if s.TIMESTAMP in out:
        column = next(c for c, canon, _ in spec if canon == s.TIMESTAMP)
        _check_timestamps(out[s.TIMESTAMP], column, line_of, member.label)
    return pa.Table.from_arrays(
        [out[f.name] for f in s.TABLE_SCHEMAS[table]], schema=s.TABLE_SCHEMAS[table]
    )


def _finish(
    table: str, layout: str, out: Columns, raw: Columns, line_of: LineOf, label: str
) -> Columns:
    """Turn the typed file columns into canonical ones (timestamps, titles, genres, codes)."""
    if s.TIMESTAMP in out:
        out[s.TIMESTAMP] = pc.cast(out[s.TIMESTAMP], s.TIMESTAMP_TYPE)  # Unix s / naive = UTC
    if table == "movies":
        out[s.TITLE] = pc.utf8_trim_whitespace(out[s.TITLE])
        out[s.YEAR] = pc.cast(
            pc.struct_field(pc.extract_regex(out[s.TITLE], _YEAR), [0]), pa.int16()
        )
        if layout == "100k":
            released = pc.extract_regex(raw["release date"], r"(?P<year>\d{4})\s*$")
            released = pc.cast(pc.struct_field(released, [0]), pa.int16())
            out[s.YEAR] = pc.coalesce(out[s.YEAR], released)
            out[s.GENRES] = _genre_flags(raw, line_of, label)
        else:
            out[s.GENRES] = _split_genres(out[s.GENRES])
    if table == "links":
        out[s.IMDB_ID] = pc.if_else(
            pc.equal(out[s.IMDB_ID], ""), pa.scalar(None, pa.string()), out[s.IMDB_ID]
        )
    if table == "users" and layout == "dat":
        codes = out[s.OCCUPATION]
        bad = pc.fill_null(pc.or_(pc.less(codes, 0), pc.greater(codes, 20)), False)
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            raise ValueError(
                f"{label}, line {line_of(i)}, column 'Occupation': code {codes[i].as_py()} is "
                "not one of the ml-1m occupation codes 0-20"
            )
        out[s.OCCUPATION] = pa.array(OCCUPATIONS_1M).take(codes)
    return out


def _split_genres(genres: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """'A|B' -> ['A', 'B']; '(no genres listed)' and '' -> []."""
    lists = pc.split_pattern(genres, "|")
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    keep = t._bools(pc.invert(pc.is_in(flat, value_set=pa.array(["", _NO_GENRES]))))
    counts = np.bincount(parents[keep], minlength=len(lists))
    return _lists(counts, flat.filter(pa.array(keep)))


def _genre_flags(raw: Columns, line_of: LineOf, label: str) -> pa.ListArray:
    """ml-100k's 19 0/1 genre columns -> genre name lists (vectorised, 'unknown' -> none)."""
    flags = np.column_stack([pc.fill_null(raw[g], 0).to_numpy() for g in GENRES_100K])
    bad = ((flags != 0) & (flags != 1)).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        genre = GENRES_100K[int(np.argmax((flags[i] != 0) & (flags[i] != 1)))]
        raise ValueError(
            f"{label}, line {line_of(i)}, column '{genre}': genre flags must be 0 or 1"
        )
    rows, cols = np.nonzero(flags[:, 1:])  # row-major: each movie's genres in u.genre order
    names = pa.array(GENRES_100K[1:]).take(pa.array(cols))
    return _lists(np.bincount(rows, minlength=len(flags)), names)


def _lists(counts: np.ndarray, values: pa.Array) -> pa.ListArray:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _check_timestamps(ts: pa.ChunkedArray, column: str, line_of: LineOf, label: str) -> None:
    """Raise naming the first line whose timestamp lies outside [EARLIEST_TIMESTAMP, now]."""
    seconds = pc.cast(ts, pa.int64())
    bad = s.timestamps_out_of_range(seconds)
    n_bad = pc.sum(bad).as_py() or 0
    if n_bad:
        i = pc.index(bad, True).as_py()
        raise ValueError(
            f"{label}, line {line_of(i)}, column '{column}': "
            f"{s.timestamp_range_message(seconds[i].as_py())}; {n_bad} of {len(ts)} rows are "
            "out of range"
        )


def _check_ratings(
    ratings: pa.ChunkedArray, column: str, scale: Scale, release: str, line_of: LineOf, label: str
) -> None:
    """Raise when there are no ratings or any non-null rating is off the release's scale."""
    if len(ratings) == 0:
        raise ValueError(f"{label} holds no ratings (no data lines)")
    allowed = pa.array(scale.allowed_values(), pa.float32())
    ok = pc.is_in(pc.fill_null(ratings, allowed[0]), value_set=allowed)  # NaN is never allowed
    n_bad = len(ok) - pc.sum(ok).as_py()
    if n_bad:
        i = pc.index(ok, False).as_py()
        value = round(ratings[i].as_py(), 6)  # float32 3.3 -> 3.3, not 3.299999952316284
        raise OffScaleError(
            f"{label}, line {line_of(i)}, column '{column}': rating {value} is not on "
            f"the {release} scale ({scale.min:g} to {scale.max:g} in steps of {scale.step:g}); "
            f"{n_bad} of {len(ratings)} rows are off the scale"
        )


def _headerless(
    spec: Spec, sep: str, encoding: str = "utf-8", free: int | None = None
) -> LineFormat:
    names, kinds = zip(*((c, k) for c, _, k in spec), strict=True)
    return LineFormat(sep=sep, columns=names, kinds=kinds, free=free, encoding=encoding)


def _first_line(member: Member, encoding: str = "utf-8") -> str:
    """The file's first line; raises ValueError for a 0-byte file."""
    with member.open() as stream:
        head = stream.read(1 << 16)
    if not head:
        raise ValueError(f"{member.label} is empty (0 bytes)")
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        return decode(first, encoding).lstrip("\ufeff")
    except UnicodeDecodeError as err:
        raise ValueError(f"{member.label}, line 1: the header is not valid {encoding}") from err


def _csv_format(member: Member, spec: Spec) -> LineFormat:
    """Check a CSV header holds the spec's columns, and describe the file's lines."""
    header = _first_line(member)
    names = next(csv.reader([header]))
    required = [c for c, _, _ in spec]
    missing = [c for c in required if c not in names]
    if missing:
        for sep in (";", "\t", "|", "::"):
            if len(names) == 1 and sep in header:
                raise ValueError(
                    f"{member.label}, line 1: the header {header!r} looks like it uses {sep!r} "
                    f"as separator; expected ',' separating {','.join(required)}"
                )
        raise ValueError(
            f"{member.label}, line 1: the header lacks column(s) {', '.join(map(repr, missing))}; "
            f"found {names}, expected {','.join(required)}"
        )
    kinds = {c: k for c, _, k in spec}
    return LineFormat(
        sep=",",
        columns=tuple(names),
        kinds=tuple(kinds.get(c, "str") for c in names),
        quoted=True,
        header=True,
    )


def _read_csv(
    member: Member,
    fmt: LineFormat,
    spec: Spec,
    delimiter: str | None = None,
    names: list[str] | None = None,
) -> Columns:
    """Read the spec's columns with pyarrow.csv; on failure, name the first bad line."""
    if not fmt.header:
        _first_line(member, fmt.encoding)  # 0-byte check with a clear message
    names = names or (None if fmt.header else list(fmt.columns))
    options = {
        "read_options": pcsv.ReadOptions(
            column_names=names, encoding=fmt.encoding, block_size=BLOCK_BYTES
        ),
        "parse_options": pcsv.ParseOptions(
            delimiter=delimiter or fmt.sep, quote_char='"' if fmt.quoted else False
        ),
        "convert_options": pcsv.ConvertOptions(
            include_columns=[c for c, _, _ in spec],
            column_types={c: t.ARROW_TYPES[k] for c, _, k in spec},
            null_values=[""],
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    }
    try:
        with _arrow_input(member) as source:
            table = pcsv.read_csv(source, **options)
    except pa.ArrowInvalid as err:
        problem = t.locate_problem(member, fmt)
        if problem is None:
            problem = t.explain_arrow_error(member, fmt, str(err), names or list(fmt.columns))
        raise ValueError(f"{member.label}, {problem}") from err
    columns = {c: table.column(c) for c, _, _ in spec}
    for c, _, kind in spec:
        if kind == "intfloat":
            columns[c] = _whole_int32(columns[c], c, member, fmt)
    return columns


def _whole_int32(values: pa.ChunkedArray, column: str, member: Member,
                 fmt: LineFormat) -> pa.ChunkedArray:
    """An integer column read as float ('862.0', as pandas writes an id column with gaps) ->
    int32; a fraction or a value past int32 is an error naming its line."""
    x = values.to_numpy(zero_copy_only=False)
    ok = np.isnan(x) | ((np.floor(x) == x) & (np.abs(x) < 2**31))
    if not ok.all():
        i = int(np.argmin(ok))
        shown = str(int(x[i])) if np.floor(x[i]) == x[i] else str(float(x[i]))
        raise ValueError(f"{member.label}, line {t.line_of_record(member, fmt, i)}, column "
                         f"'{column}': cannot parse '{shown}' as an integer")
    return pc.cast(values, pa.int32())


@contextmanager
def _arrow_input(member: Member) -> Iterator[object]:
    """A path (pyarrow reads it natively) for folder files, a stream for zip members."""
    if member.in_zip:
        with member.open() as stream:
            yield stream
    else:
        yield str(member.source / member.name)


def _line_finder(member: Member, fmt: LineFormat) -> LineOf:
    return lambda index: t.line_of_record(member, fmt, index)


def _read_split(member: Member, fmt: LineFormat) -> tuple[Columns, LineOf]:
    """Read a small '::' file by splitting its lines in memory (free text may hold '::')."""
    _first_line(member, fmt.encoding)  # 0-byte check with a clear message
    lines, numbers = t.read_lines(member, fmt)
    problem = t.describe_problem(lines, numbers, fmt)
    if problem is not None:
        raise ValueError(f"{member.label}, {problem}")
    _, fields = t.split_fields(lines, fmt)
    columns = {
        c: t.cast_field(v, k) for c, k, v in zip(fmt.columns, fmt.kinds, fields, strict=True)
    }
    return columns, lambda index: int(numbers[index])
