"""A new user's ratings: parse them (by movieId or title), and store them as a new raw file.

Parsing checks every row and reports all bad rows at once, by line number: unknown ids or
titles, ambiguous titles, duplicates, ratings off the half-star scale 0.5..5, and too few
ratings. Storing writes ``<raw_dir>/new_users/user_<user_id>.csv`` in the ml-latest
``ratings.csv`` format with a fresh ``userId``; it creates that one file (atomically, never
replacing a file) and touches nothing else under ``raw_dir``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import schema as S
from recsys_pipeline.data.lake import file_mode
from recsys_pipeline.data.movielens import Release, detect_release, read_table
from recsys_pipeline.data.raw_watch import ingested_release_name, ingested_source

LINE = "line"  # source line (CSV) or 1-based entry (mapping) of a parsed rating
NEW_USER_SCHEMA = pa.schema(
    [pa.field(LINE, pa.int32(), nullable=False), pa.field(S.ITEM_ID, S.ID_TYPE, nullable=False),
     pa.field(S.TITLE, pa.string()), pa.field(S.RATING, S.RATING_TYPE, nullable=False)]
)
MIN_RATINGS = 20
RATING_MIN, RATING_MAX, RATING_STEP = 0.5, 5.0, 0.5
NEW_USERS_DIR = "new_users"
RATINGS_HEADER = "userId,movieId,rating,timestamp"
_YEAR = re.compile(r"\s*\(\d{4}(?:[-–]\d{4})?\)\s*$")  # a trailing "(1995)" or "(1994-1998)"
_FILE = re.compile(r"^user_(\d+)\.csv$")
_SHOWN = 25  # problems listed in one error message


@dataclass(frozen=True)
class PersistedUser:
    """Where :func:`persist_new_user` wrote a new user.

    Attributes:
        user_id: The fresh ``userId`` (or the stored one, when ``stored_before``).
        path: The written CSV file.
        n_ratings: Rows written.
        stored_before: True when the same ratings were stored already (a second run of the
            same command) and nothing was written.
    """

    user_id: int
    path: Path
    n_ratings: int
    stored_before: bool = False


def _norm(title: str) -> str:
    return " ".join(title.split()).casefold()


class _Titles:
    """Case-insensitive title lookup, with and without the trailing year."""

    def __init__(self, movies: pa.Table) -> None:
        self.full: dict[str, list[int]] = {}
        self.bare: dict[str, list[int]] = {}
        ids = movies.column(S.ITEM_ID).to_pylist()
        for item, title in zip(ids, movies.column(S.TITLE).to_pylist(), strict=True):
            if title:
                self.full.setdefault(_norm(title), []).append(item)
                self.bare.setdefault(_norm(_YEAR.sub("", title)), []).append(item)
        self.title_of = dict(zip(ids, movies.column(S.TITLE).to_pylist(), strict=True))

    def find(self, query: str) -> tuple[int | None, str | None]:
        """``(item_id, None)`` or ``(None, problem)``."""
        key = _norm(query)
        hits = self.full.get(key) or ([] if _YEAR.search(query) else self.bare.get(key, []))
        if len(hits) == 1:
            return hits[0], None
        if not hits:
            return None, f"title {query!r} not found in movies"
        shown = ", ".join(f"{self.title_of[i]!r} (movieId {i})" for i in sorted(hits)[:5])
        return None, f"title {query!r} is ambiguous: {shown}; use movieId or add the year"


def _parse_rating(text: str, scale: tuple[float, float, float]
                  ) -> tuple[float | None, str | None]:
    low, high, step = scale
    try:
        value = float(text)
    except ValueError:
        return None, f"rating {text!r} is not a number"
    steps = (value - low) / step
    if not (low <= value <= high and abs(steps - round(steps)) < 1e-9):
        return None, (f"rating {text.strip()} is off the scale {low:g}..{high:g} "
                      f"in steps of {step:g}")
    return value, None


def _parse_time(text: str | None) -> tuple[int | None, str | None]:
    if text is None:
        return None, None
    try:
        seconds = int(text)
    except ValueError:
        return None, f"timestamp {text!r} is not whole Unix seconds (e.g. 1700000000)"
    if S.timestamp_out_of_range(seconds):
        return None, S.timestamp_range_message(seconds)
    return seconds, None


def _read_text(path: Path) -> str:
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give the new-user ratings CSV file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: new-user ratings file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: byte {data[exc.start]:#04x} is not UTF-8; "
                         "save the file as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)") from None


def _csv_rows(path: Path) -> tuple[str, list[tuple[int, str, str, str | None]]]:
    """``(key column, [(line, key, rating, timestamp or None)])`` from a CSV with a header."""
    reader = csv.reader(io.StringIO(_read_text(path)))
    header = [h.strip().lower() for h in next(reader, [])]
    key = next((c for c in ("movieid", "item_id", "title") if c in header), None)
    if key is None or "rating" not in header:
        raise ValueError(f"{path}: line 1: header {header} needs a 'rating' column and "
                         "'movieId' or 'title'")
    k, r = header.index(key), header.index("rating")
    t = header.index(S.TIMESTAMP) if S.TIMESTAMP in header else None
    rows, problems = [], []
    for fields in reader:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            problems.append(f"line {reader.line_num}: {len(fields)} fields, header has "
                            f"{len(header)}")
            continue
        rows.append((reader.line_num, fields[k].strip(), fields[r].strip(),
                     None if t is None else fields[t].strip()))
    if problems:
        _raise(str(path), problems)
    return ("title" if key == "title" else "movieid"), rows


def _mapping_rows(ratings: Mapping[int | str, float]
                  ) -> list[tuple[int, str | int, str, None]]:
    return [(n, key, str(value), None)
            for n, (key, value) in enumerate(ratings.items(), start=1)]


def _raise(source: str, problems: list[str]) -> None:
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    raise ValueError(f"{source}: {len(problems)} bad row(s):\n  "
                     + "\n  ".join(problems[:_SHOWN]) + more)


def _resolve(key_kind: str, key: str | int, titles: _Titles,
             known: set[int]) -> tuple[int | None, str | None]:
    if key_kind == "title" or (key_kind == "mapping" and isinstance(key, str)):
        return titles.find(str(key))
    try:
        item = int(key)
    except ValueError:
        return None, f"movieId {key!r} is not an integer"
    return (item, None) if item in known else (None, f"movieId {item} not in movies")


def parse_new_user_ratings(
    source: str | os.PathLike[str] | Mapping[int | str, float],
    movies: pa.Table,
    min_ratings: int = MIN_RATINGS,
    scale: tuple[float, float, float] | None = None,
) -> pa.Table:
    """Read a new user's ratings and match them to movies.

    Args:
        source: A CSV file (UTF-8) with a header and ``movieId,rating`` or ``title,rating``
            rows, optionally a ``timestamp`` column (other columns are ignored; titles with
            commas must be quoted), or a mapping
            ``{movieId (int) or title (str): rating}``. Titles match case-insensitively,
            the trailing year optional (``"toy story"`` finds ``Toy Story (1995)`` when only
            one movie has that name).
        movies: ``schema.MOVIES_SCHEMA`` table.
        min_ratings: Fewest ratings accepted.
        scale: ``(min, max, step)`` of the allowed ratings: the release's
            (``data.raw_watch.ingested_rating_scale``; whole stars 1..5 for ml-1m and
            ml-100k, whose ingestion refuses half stars); None: half stars 0.5..5.

    Returns:
        ``NEW_USER_SCHEMA`` rows: line (file line, or 1-based entry of a mapping), item_id,
        title, rating; plus ``timestamp`` (int64 Unix seconds) when the file has that column
        (it orders a sequence model's input and is stored by :func:`persist_new_user`).

    Raises:
        FileNotFoundError: The file is missing.
        ValueError: A folder or a file that is not UTF-8; or naming every offending line:
            bad header or field count, unknown or ambiguous movie, rating not on the
            half-star scale, a timestamp that is not whole seconds, a movie rated twice; or
            fewer than ``min_ratings`` ratings (and always: none at all).
    """
    if isinstance(source, Mapping):
        name, kind, rows = "new-user ratings", "mapping", _mapping_rows(source)
        where = "entry"
    else:
        name = str(source)
        kind, rows = _csv_rows(Path(source))
        where = "line"
    titles = _Titles(movies)
    known = set(movies.column(S.ITEM_ID).to_pylist())
    out: list[tuple[int, int, float, int | None]] = []
    first_line: dict[int, int] = {}
    problems: list[str] = []
    for line, key, text, time_text in rows:
        item, problem = _resolve(kind, key, titles, known)
        value, bad_rating = _parse_rating(text, scale or (RATING_MIN, RATING_MAX, RATING_STEP))
        when, bad_time = _parse_time(time_text)
        problem = problem or bad_rating or bad_time
        if problem is None and item in first_line:
            problem = f"movieId {item} rated again (first on {where} {first_line[item]})"
        if problem is not None:
            problems.append(f"{where} {line}: {problem}")
            continue
        first_line[item] = line
        out.append((line, item, value, when))
    if problems:
        _raise(name, problems)
    if len(out) < max(min_ratings, 1):
        raise ValueError(f"{name}: {len(out)} rating(s) ({where}s "
                         f"{', '.join(str(r[0]) for r in out) or 'none'}); "
                         f"at least {max(min_ratings, 1)} are needed")
    lines, items, values, times = (list(c) for c in zip(*out, strict=True))
    table = pa.Table.from_arrays(
        [pa.array(lines, pa.int32()), pa.array(items, S.ID_TYPE),
         pa.array([titles.title_of[i] for i in items], pa.string()),
         pa.array(values, S.RATING_TYPE)], schema=NEW_USER_SCHEMA)
    if rows and rows[0][3] is not None:  # the file has a timestamp column
        table = table.append_column(S.TIMESTAMP, pa.array(times, pa.int64()))
    return table


def _releases(raw: Path) -> list[Release]:
    """The release last ingested (``raw/movielens_release.json``) and the one detected under
    ``raw``, where they exist: a new id must be fresh in both."""
    found: list[Release] = []
    source, name = ingested_source(raw), ingested_release_name(raw)
    if source is not None and source.exists():
        found.append(detect_release(source, name or None))
    try:
        detected = detect_release(raw)
    except (ValueError, FileNotFoundError):
        if not found:
            raise
    else:
        if not found or Path(detected.source) != Path(found[0].source):
            found.append(detected)
    return found


def max_user_id(raw_dir: str | os.PathLike[str]) -> int:
    """The largest ``userId`` under ``raw_dir``: the ingested release's ratings (the one
    ``raw/movielens_release.json`` records, e.g. a downloaded zip), the release folder
    found under ``raw_dir``, and the stored new users.

    Args:
        raw_dir: The lake's raw folder (or a release folder).

    Returns:
        The largest id (0 when there is none).
    """
    raw = Path(raw_dir)
    largest = 0
    for release in _releases(raw):
        ratings = read_table(release, "ratings").column(S.USER_ID)
        largest = max(largest, int(pc.max(ratings).as_py() or 0))
    return max(largest, _max_stored(raw))


def _max_stored(raw: Path) -> int:
    folder = raw / NEW_USERS_DIR
    found = [int(m.group(1)) for p in folder.glob("user_*.csv") if (m := _FILE.match(p.name))]
    return max(found, default=0)


def _stored_users(raw: Path) -> Iterator[tuple[int, Path, list[tuple[int, float]]]]:
    """``(userId, file, sorted (movieId, rating) pairs)`` of each stored new-user file this
    module could have written (others are skipped: ingestion reports them)."""
    for path in sorted((raw / NEW_USERS_DIR).glob("user_*.csv")):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        try:
            pairs = sorted((int(r["movieId"]), float(r["rating"])) for r in rows)
            users = {int(r["userId"]) for r in rows}
        except (KeyError, TypeError, ValueError):
            continue
        if len(users) == 1:
            yield users.pop(), path, pairs


def _pairs(ratings: pa.Table) -> list[tuple[int, float]]:
    return sorted(zip(ratings.column(S.ITEM_ID).to_pylist(),
                      (float(r) for r in ratings.column(S.RATING).to_pylist()), strict=True))


def _stored_with_same_ratings(raw: Path, ratings: pa.Table) -> tuple[int, Path] | None:
    """The (userId, file) of a stored new user with exactly these (movieId, rating) pairs."""
    want = _pairs(ratings)
    return next(((user, path) for user, path, have in _stored_users(raw) if have == want), None)


def overlapping_new_users(raw_dir: str | os.PathLike[str], ratings: pa.Table,
                          min_share: float = 0.8) -> list[tuple[int, Path, int]]:
    """Stored new users who rated at least ``min_share`` of the movies in ``ratings``,
    perhaps the same person stored before with a rating changed, added or removed.

    Returns:
        ``(userId, file, movies in common)`` per such user, most in common first.
    """
    movies = set(ratings.column(S.ITEM_ID).to_pylist())
    found = [(user, path, len(movies & {m for m, _ in pairs}))
             for user, path, pairs in _stored_users(Path(raw_dir))]
    return sorted((f for f in found if f[2] >= min_share * len(movies) > 0),
                  key=lambda f: (-f[2], f[0]))


def _csv_text(user_id: int, ratings: pa.Table, timestamp: int) -> str:
    items = ratings.column(S.ITEM_ID).to_numpy().astype(np.int64)
    values = ratings.column(S.RATING).to_numpy().astype(np.float64)
    if len(items) == 0 or len(np.unique(items)) != len(items):
        raise ValueError("ratings must be non-empty with each item_id once")
    steps = (values - RATING_MIN) / RATING_STEP
    bad = (values < RATING_MIN) | (values > RATING_MAX) | (np.abs(steps - np.round(steps)) > 1e-9)
    if bad.any():
        raise ValueError(f"ratings off the half-star scale for item_id(s) {items[bad].tolist()}")
    if S.TIMESTAMP in ratings.column_names:
        times = ratings.column(S.TIMESTAMP).cast(pa.int64()).to_numpy()
    else:
        times = np.full(len(items), timestamp, dtype=np.int64)
    rows = (f"{user_id},{i},{v:.1f},{t}" for i, v, t in zip(items, values, times, strict=True))
    return RATINGS_HEADER + "\n" + "\n".join(rows) + "\n"


def _create_exclusive(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then hard-link it in: atomic, and
    FileExistsError instead of replacing an existing file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.chmod(tmp, file_mode())
        os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def persist_new_user(
    ratings: pa.Table,
    raw_dir: str | os.PathLike[str],
    user_id: int | None = None,
    *,
    known_max_user_id: int | None = None,
    timestamp: int | None = None,
) -> PersistedUser:
    """Store a new user's ratings as ``<raw_dir>/new_users/user_<user_id>.csv``.

    The file has the ml-latest ``ratings.csv`` header and formats
    (``userId,movieId,rating,timestamp``, ratings like ``4.5``, Unix-second timestamps).

    Args:
        ratings: ``item_id`` and ``rating`` columns (optionally ``timestamp``), e.g. from
            :func:`parse_new_user_ratings`.
        raw_dir: The lake's raw folder (e.g. ``data_lake/raw``).
        user_id: The id to use; None takes the next free one. Either way it must exceed
            every existing id.
        known_max_user_id: The release's largest ``userId`` if known; None reads the
            release's ratings under ``raw_dir`` (seconds for the 33M-row ml-latest).
        timestamp: Unix seconds for every row when ``ratings`` has no timestamp (default:
            now).

    Returns:
        The :class:`PersistedUser`. When a stored new user already has exactly these
        (movieId, rating) pairs, that user with ``stored_before=True``: running the same
        command twice stores one user, not two.

    Raises:
        ValueError: ``user_id`` is not fresh (or differs from the user already holding these
            ratings), or the ratings are empty, repeated or off the half-star scale.
    """
    raw = Path(raw_dir)
    if (same := _stored_with_same_ratings(raw, ratings)) is not None:
        stored_id, stored_path = same
        if user_id is not None and user_id != stored_id:
            raise ValueError(f"these {ratings.num_rows} ratings are already stored as user_id "
                             f"{stored_id} ({stored_path}), not {user_id}; delete that file "
                             "to store them under another id")
        return PersistedUser(stored_id, stored_path, ratings.num_rows, stored_before=True)
    if known_max_user_id is None:
        existing = max_user_id(raw)
    else:
        existing = max(known_max_user_id, _max_stored(raw))
    if user_id is not None and user_id <= existing:
        raise ValueError(f"user_id {user_id} is not fresh: ids up to {existing} exist under {raw}")
    folder = raw / NEW_USERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    when = int(time.time()) if timestamp is None else int(timestamp)
    candidate = existing + 1 if user_id is None else user_id
    for _ in range(100):  # another writer may take an id between the scan and the link
        path = folder / f"user_{candidate}.csv"
        try:
            _create_exclusive(path, _csv_text(candidate, ratings, when))
            return PersistedUser(candidate, path, ratings.num_rows)
        except FileExistsError:
            if user_id is not None:
                raise ValueError(f"{path} already exists; user_id {user_id} is taken") from None
            candidate += 1
    raise ValueError(f"{folder}: could not find a free user id after {existing}")
