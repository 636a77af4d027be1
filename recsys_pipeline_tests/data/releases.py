"""Writers of tiny, deterministic MovieLens releases in every official layout, for tests.

``write_release(root, kind)`` writes a release folder (named like the official one) under
``root`` and returns it; ``tiny_release(kind)`` gives the same content as canonical rows (what
``read_table`` must return), and ``zip_release(folder)`` packs a folder like GroupLens does (one
top folder). ``kind`` is an official name ("ml-latest-small", "ml-1m", ...) or a layout: "csv"
(= ml-latest-small), "csv-renamed" (ml-20m with rating.csv ... and date-time strings), "dat"
(= ml-1m) or "100k" (= ml-100k).

The content exercises the formats: non-contiguous ids, a title with a comma and an accent
('Misérables, Les (1995)', Latin-1 in ml-1m / ml-100k), a title without a year, a title with
trailing whitespace, '(no genres listed)', tags with a comma, quotes and '::', an empty tmdbId.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

KINDS: dict[str, tuple[str, str]] = {  # kind -> (official name, layout)
    "csv": ("ml-latest-small", "csv"),
    "csv-renamed": ("ml-20m", "csv-renamed"),
    "dat": ("ml-1m", "dat"),
    "100k": ("ml-100k", "100k"),
    **{n: (n, "csv") for n in ("ml-latest-small", "ml-latest", "ml-20m", "ml-25m", "ml-32m")},
    "ml-1m": ("ml-1m", "dat"),
    "ml-10m": ("ml-10m", "dat"),
    "ml-100k": ("ml-100k", "100k"),
}
FOLDERS = {"ml-10m": "ml-10M100K"}  # official top folder of each zip, where not the name
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
# (title without year, year, genres in u.genre order so every layout can express them)
MOVIES = (
    ("Toy Story", 1995, ["Adventure", "Animation", "Comedy"]),
    ("Misérables, Les", 1995, ["Drama", "War"]),
    ("Heat", 1995, ["Action", "Crime", "Thriller"]),
    ("Babylon 5", None, ["Sci-Fi"]),
    ("Sabrina", 1995, ["Comedy", "Romance"]),
    ("Nixon", 1995, []),
    ("Star Wars: Episode IV - A New Hope", 1977, ["Action", "Adventure", "Sci-Fi"]),
)
TAGS = ("funny", "Highly quotable", "dark, moody", 'says "wow"', "sci-fi::classic")
T0 = 964_982_703  # 2000-07-30 18:45:03 UTC


@dataclass(frozen=True)
class TinyRelease:
    """A tiny release as canonical rows (dicts keyed by schema column names)."""

    name: str
    layout: str
    tables: dict[str, list[dict]] = field(default_factory=dict)


def tiny_release(
    kind: str = "csv", *, n_users: int = 4, n_items: int = 7, per_user: int = 3, seed: int = 0
) -> TinyRelease:
    """The canonical content of ``write_release(root, kind, ...)`` with the same arguments."""
    name, layout = KINDS[kind]
    if per_user > n_items:
        raise ValueError(f"per_user={per_user} exceeds n_items={n_items}")
    rng = np.random.default_rng(seed)
    items = np.cumsum(rng.integers(1, 4, n_items)).tolist()  # non-contiguous movie ids
    whole = name in ("ml-1m", "ml-100k")
    scale = np.arange(1.0, 5.5, 1.0) if whole else np.arange(0.5, 5.5, 0.5)
    ratings = [
        {
            "user_id": u,
            "item_id": items[j],
            "rating": float(rng.choice(scale)),
            "timestamp": _utc(T0 + 86_400 * u + 60 * k + int(rng.integers(0, 60))),
        }
        for u in range(1, n_users + 1)
        for k, j in enumerate(rng.choice(n_items, per_user, replace=False).tolist())
    ]
    movies = []
    for j, item in enumerate(items):
        title, year, genres = MOVIES[j % len(MOVIES)]
        title += f" {j // len(MOVIES) + 1}" if j >= len(MOVIES) else ""
        title += f" ({year})" if year else ""
        movies.append({"item_id": item, "title": title, "year": year, "genres": list(genres)})
    tables = {"ratings": ratings, "movies": movies}
    if layout in ("csv", "csv-renamed") or name == "ml-10m":
        tables["tags"] = [
            {
                "user_id": r["user_id"],
                "item_id": r["item_id"],
                "tag": TAGS[i % len(TAGS)],
                "timestamp": _utc(int(r["timestamp"].timestamp()) + 5),
            }
            for i, r in enumerate(ratings[::2])
        ]
    if layout in ("csv", "csv-renamed"):
        tables["links"] = [
            {
                "item_id": m,
                "imdb_id": f"{114_709 + m:07d}",
                "tmdb_id": None if j % 4 == 3 else 862 + m,
            }
            for j, m in enumerate(items)
        ]
    if layout in ("dat", "100k") and name != "ml-10m":
        tables["users"] = [
            {
                "user_id": u,
                "gender": "FM"[u % 2],
                "age": (1, 18, 25, 35, 45, 50, 56)[u % 7] if layout == "dat" else 17 + 3 * u,
                "occupation": OCCUPATIONS_1M[(5 * u) % 21]
                if layout == "dat"
                else ("technician", "other", "writer", "executive", "student")[u % 5],
                "zip_code": "T8H1N" if u == 2 else f"{10_000 + 7 * u:05d}",
            }
            for u in range(1, n_users + 1)
        ]
    return TinyRelease(name=name, layout=layout, tables=tables)


def write_release(
    root: Path | str,
    kind: str = "csv",
    *,
    n_users: int = 4,
    n_items: int = 7,
    per_user: int = 3,
    seed: int = 0,
    line_end: str | None = None,
    folder_name: str | None = None,
) -> Path:
    """Write a tiny release of ``kind`` into ``root/<official folder name>``; return the folder.

    Args:
        root: parent folder (created if needed).
        kind: official name or layout (see module docstring).
        n_users, n_items, per_user, seed: size and content (deterministic for a seed).
        line_end: "\\r\\n" or "\\n"; default CRLF for the CSV layout (like ml-latest-small),
            LF for the others.
        folder_name: override the folder name (e.g. to test detection by layout).
    """
    rel = tiny_release(kind, n_users=n_users, n_items=n_items, per_user=per_user, seed=seed)
    eol = line_end or ("\r\n" if rel.layout == "csv" else "\n")
    folder = Path(root) / (folder_name or FOLDERS.get(rel.name, rel.name))
    folder.mkdir(parents=True, exist_ok=True)
    writer = {"csv": _write_csv, "csv-renamed": _write_csv, "dat": _write_dat, "100k": _write_100k}
    for file_name, text, encoding in writer[rel.layout](rel):
        (folder / file_name).write_bytes(text.replace("\n", eol).encode(encoding))
    return folder


def zip_release(folder: Path | str, zip_path: Path | str | None = None) -> Path:
    """Zip a release folder the GroupLens way (one top folder with the files); return the zip."""
    folder = Path(folder)
    zip_path = Path(zip_path) if zip_path else folder.with_name(folder.name + ".zip")
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(folder.name + "/", b"")
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{folder.name}/{path.name}")
    return zip_path


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _raw_title(movie: dict, j: int) -> str:
    return movie["title"] + (" " if j % 5 == 4 else "")  # readers strip trailing spaces


def _genres(movie: dict) -> str:
    return "|".join(movie["genres"]) or "(no genres listed)"


def _csv_text(rows: list[list]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _write_csv(rel: TinyRelease) -> list[tuple[str, str, str]]:
    renamed = rel.layout == "csv-renamed"

    def when(ts: datetime) -> str | int:
        return ts.strftime("%Y-%m-%d %H:%M:%S") if renamed else int(ts.timestamp())

    t = rel.tables
    files = {
        "ratings": [["userId", "movieId", "rating", "timestamp"]]
        + [
            [r["user_id"], r["item_id"], f"{r['rating']:.1f}", when(r["timestamp"])]
            for r in t["ratings"]
        ],
        "movies": [["movieId", "title", "genres"]]
        + [[m["item_id"], _raw_title(m, j), _genres(m)] for j, m in enumerate(t["movies"])],
        "tags": [["userId", "movieId", "tag", "timestamp"]]
        + [[r["user_id"], r["item_id"], r["tag"], when(r["timestamp"])] for r in t["tags"]],
        "links": [["movieId", "imdbId", "tmdbId"]]
        + [
            [r["item_id"], r["imdb_id"], "" if r["tmdb_id"] is None else r["tmdb_id"]]
            for r in t["links"]
        ],
    }
    return [
        (f"{table[:-1] if renamed else table}.csv", _csv_text(rows), "utf-8")
        for table, rows in files.items()
    ]


def _write_dat(rel: TinyRelease) -> list[tuple[str, str, str]]:
    t, one_m = rel.tables, rel.name == "ml-1m"

    def fmt(r: float) -> str:
        return f"{r:g}"  # '5', '3.5' as in the .dat files

    out = [
        (
            "ratings.dat",
            "".join(
                f"{r['user_id']}::{r['item_id']}::{fmt(r['rating'])}::{int(r['timestamp'].timestamp())}\n"
                for r in t["ratings"]
            ),
            "utf-8",
        ),
        (
            "movies.dat",
            "".join(
                f"{m['item_id']}::{_raw_title(m, j)}::{_genres(m)}\n"
                for j, m in enumerate(t["movies"])
            ),
            "latin-1" if one_m else "utf-8",
        ),
    ]
    if "tags" in t:
        out.append(
            (
                "tags.dat",
                "".join(
                    f"{r['user_id']}::{r['item_id']}::{r['tag']}::{int(r['timestamp'].timestamp())}\n"
                    for r in t["tags"]
                ),
                "utf-8",
            )
        )
    if "users" in t:
        out.append(
            (
                "users.dat",
                "".join(
                    f"{u['user_id']}::{u['gender']}::{u['age']}::{OCCUPATIONS_1M.index(u['occupation'])}"
                    f"::{u['zip_code']}\n"
                    for u in t["users"]
                ),
                "utf-8",
            )
        )
    return out


def _write_100k(rel: TinyRelease) -> list[tuple[str, str, str]]:
    t = rel.tables
    data = "".join(
        f"{r['user_id']}\t{r['item_id']}\t{int(r['rating'])}\t{int(r['timestamp'].timestamp())}\n"
        for r in t["ratings"]
    )
    items = []
    for j, m in enumerate(t["movies"]):
        date = f"01-Jan-{m['year']}" if m["year"] else ""
        flags = "|".join("1" if g in m["genres"] else "0" for g in GENRES_100K)
        url = "http://us.imdb.com/M/title-exact?" + m["title"].replace(" ", "%20")
        items.append(f"{m['item_id']}|{_raw_title(m, j)}|{date}||{url}|{flags}\n")
    users = "".join(
        f"{u['user_id']}|{u['age']}|{u['gender']}|{u['occupation']}|{u['zip_code']}\n"
        for u in t["users"]
    )
    genre = "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K))
    return [
        ("u.data", data, "utf-8"),
        ("u.item", "".join(items), "latin-1"),
        ("u.user", users, "utf-8"),
        ("u.genre", genre, "utf-8"),
    ]
