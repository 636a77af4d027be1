"""One entry to every MovieLens release: detect it (folder or zip), read its tables to schema.py.

Supported layouts (see the data sets' README files):

- ``csv``: ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m (``ratings.csv`` ... with a header).
- ``csv-renamed``: redistributed ml-20m (``rating.csv`` ... with 'YYYY-MM-DD HH:MM:SS' UTC times).
- ``dat``: ml-1m and ml-10m (``ratings.dat`` ... ``::``-separated, no header).
- ``100k``: ml-100k (``u.data`` tab-separated, ``u.item`` / ``u.user`` ``|``-separated, Latin-1).

Example:
    >>> release = detect_release("data_lake/raw/ml-latest-small")
    >>> ratings = read_table(release, "ratings")  # user_id, item_id, rating, timestamp
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from recsys_pipeline import schema
from recsys_pipeline.data._formats import read_layout_table
from recsys_pipeline.data._textio import Member

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RatingScale:
    """The ratings a release allows: ``min`` to ``max`` in steps of ``step``."""

    min: float
    max: float
    step: float

    def allowed_values(self) -> list[float]:
        """The allowed ratings, ascending: ``min + k * step``, ``k = 0 .. (max - min) / step``."""
        n = round((self.max - self.min) / self.step)
        return [round(self.min + k * self.step, 6) for k in range(n + 1)]


HALF_STARS = RatingScale(0.5, 5.0, 0.5)
WHOLE_STARS = RatingScale(1.0, 5.0, 1.0)

OFFICIAL_RELEASES: tuple[str, ...] = (
    "ml-latest-small", "ml-latest", "ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m",
)  # fmt: skip
LAYOUTS: tuple[str, ...] = ("csv", "csv-renamed", "dat", "100k")

# layout -> canonical table -> file name; a layout is recognised by its ratings file
_LAYOUT_FILES: dict[str, dict[str, str]] = {
    "csv": {
        "ratings": "ratings.csv",
        "movies": "movies.csv",
        "tags": "tags.csv",
        "links": "links.csv",
    },
    "csv-renamed": {
        "ratings": "rating.csv",
        "movies": "movie.csv",
        "tags": "tag.csv",
        "links": "link.csv",
    },
    "dat": {
        "ratings": "ratings.dat",
        "movies": "movies.dat",
        "tags": "tags.dat",
        "users": "users.dat",
    },
    "100k": {"ratings": "u.data", "movies": "u.item", "users": "u.user"},
}
_NAME_LAYOUTS: dict[str, tuple[str, ...]] = {
    "ml-latest-small": ("csv",),
    "ml-latest": ("csv",),
    "ml-100k": ("100k",),
    "ml-1m": ("dat",),
    "ml-10m": ("dat",),
    "ml-20m": ("csv", "csv-renamed"),
    "ml-25m": ("csv",),
    "ml-32m": ("csv",),
}
_ALIASES = {"ml-10m100k": "ml-10m"}  # the ml-10m zip's top folder is 'ml-10M100K'
_SCALES = {"ml-100k": WHOLE_STARS, "ml-1m": WHOLE_STARS}  # every other release: half stars


@dataclass(frozen=True)
class Release:
    """A detected MovieLens release: where its files are and how to read them.

    Attributes:
        name: official name ("ml-latest-small", "ml-1m", ...; renamed ml-20m is "ml-20m").
        layout: "csv", "csv-renamed", "dat" or "100k".
        source: the release folder, or the .zip file.
        member_prefix: folder inside the zip holding the files ("ml-1m/"); "" for a folder.
        rating_scale: the ratings the release allows.
        files: canonical table name -> file name in the release, for the tables it has.
    """

    name: str
    layout: str
    source: Path
    member_prefix: str
    rating_scale: RatingScale
    files: dict[str, str] = field(hash=False)

    def describe(self) -> dict:
        """A JSON-able summary: name, layout, source, member_prefix, files, rating_scale."""
        return {
            "name": self.name,
            "layout": self.layout,
            "source": str(self.source),
            "member_prefix": self.member_prefix,
            "files": dict(self.files),
            "rating_scale": {
                "min": self.rating_scale.min,
                "max": self.rating_scale.max,
                "step": self.rating_scale.step,
            },
        }

    def member(self, table: str) -> Member:
        """The file holding ``table`` (see ``files``)."""
        return Member(self.source, self.member_prefix + self.files[table])


def detect_release(path: str | Path, name: str | None = None) -> Release:
    """Find out which MovieLens release ``path`` holds, from the files present.

    Args:
        path: a release folder, a folder holding exactly one release folder, or an official
            zip (one top folder, or the files at its root).
        name: the official release name, overriding the one read from the folder / zip name;
            it must fit the layout of the files.

    Returns:
        The release. Its name comes from the folder (or zip) name when that is an official
        name fitting the layout, else from the layout: csv -> ml-latest, csv-renamed -> ml-20m,
        100k -> ml-100k, dat -> ml-1m when users.dat is present, else ml-10m.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown layout (naming the files found), unreadable zip, or a ``name``
            that is not official or does not fit the layout.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (expected a MovieLens folder or zip)")
    if path.is_dir():
        folder, prefix, files, folder_name = _scan_folder(path)
    else:
        folder, prefix, files, folder_name = _scan_zip(path)
    layout = _layout_of(files)
    if layout is None:
        raise ValueError(
            f"{path} holds no MovieLens release layout I know; files found: {sorted(files)}; "
            f"expected one of: {_expected_layouts()}"
        )
    release_name = _release_name(path, layout, files, folder_name, name)
    table_files = {t: f for t, f in _LAYOUT_FILES[layout].items() if f in files}
    release = Release(
        name=release_name,
        layout=layout,
        source=folder,
        member_prefix=prefix,
        rating_scale=_SCALES.get(release_name, HALF_STARS),
        files=table_files,
    )
    logger.info("detected %s (%s layout) at %s", release_name, layout, folder)
    return release


def read_table(release: Release, table: str) -> pa.Table:
    """Read one table of a release into its canonical schema (``schema.TABLE_SCHEMAS[table]``).

    Rows come in file order and are not deduplicated; empty numeric fields stay null (cleaning
    drops and counts them; note that the canonical id/rating/timestamp fields are declared
    non-nullable, so such rows must be cleaned before the table is written to Parquet).
    Ratings are checked against ``release.rating_scale``.

    Args:
        release: from ``detect_release``.
        table: "ratings", "movies", "tags", "links" or "users".

    Returns:
        The table. Timestamps are UTC; movies.year is the 4-digit year in the title's trailing
        parentheses (ml-100k falls back to the release date); genres are lists of names.

    Raises:
        MissingTableError: (a KeyError and a ValueError) the release lacks ``table``.
        FileNotFoundError: the table's file is gone.
        ValueError: malformed content, naming the file, line, column and problem.
    """
    if table not in release.files:
        has = ", ".join(release.files)
        if table not in schema.TABLES:
            raise MissingTableError(
                f"unknown table {table!r}; tables are {', '.join(schema.TABLES)} "
                f"({release.name} has {has})"
            )
        raise MissingTableError(
            f"{release.name} at {release.source} has no {table!r} table; it has: {has}"
        )
    return read_layout_table(
        release.layout, table, release.member(table), release.name, release.rating_scale
    )


class MissingTableError(KeyError, ValueError):
    """A table the release does not have (catch it as KeyError or ValueError)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _scan_folder(path: Path) -> tuple[Path, str, set[str], str]:
    files = {p.name for p in path.iterdir() if p.is_file()}
    if _layout_of(files) is not None:
        return path, "", files, path.name
    inner = [
        d
        for d in sorted(path.iterdir())
        if d.is_dir() and _layout_of({p.name for p in d.iterdir() if p.is_file()})
    ]
    if len(inner) > 1:
        raise ValueError(
            f"{path} holds several release folders ({', '.join(d.name for d in inner)}); "
            "pass one of them"
        )
    if len(inner) == 1:
        return inner[0], "", {p.name for p in inner[0].iterdir() if p.is_file()}, inner[0].name
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    raise ValueError(
        f"{path} holds no MovieLens release layout I know; files found: {found}; "
        f"expected one of: {_expected_layouts()}"
    )


def _scan_zip(path: Path) -> tuple[Path, str, set[str], str]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [
                n
                for n in archive.namelist()
                if not n.endswith("/") and not n.startswith("__MACOSX/")
            ]
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(
            f"{path} is not a readable zip file ({err}); it may be truncated or corrupt: "
            "download it again"
        ) from err
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    at_root = {n for n in names if "/" not in n}
    if not tops:
        return path, "", at_root, path.stem
    if len(tops) == 1 and not at_root:
        top = tops.pop()
        prefix = top + "/"
        files = {n[len(prefix) :] for n in names if "/" not in n[len(prefix) :]}
        return path, prefix, files, top
    raise ValueError(
        f"{path} holds several top folders ({', '.join(sorted(tops | at_root))}); "
        "expected one release folder"
    )


def _layout_of(files: set[str]) -> str | None:
    for layout, table_files in _LAYOUT_FILES.items():
        if table_files["ratings"] in files:
            return layout
    return None


def _expected_layouts() -> str:
    return "; ".join(
        f"{layout} ({', '.join(files.values())})" for layout, files in _LAYOUT_FILES.items()
    )


def _official(candidate: str) -> str | None:
    candidate = _ALIASES.get(candidate.lower(), candidate.lower())
    return candidate if candidate in OFFICIAL_RELEASES else None


def _release_name(
    path: Path, layout: str, files: set[str], folder_name: str, name: str | None
) -> str:
    if name is not None:
        official = _official(name)
        if official is None:
            raise ValueError(
                f"{name!r} is not an official MovieLens release name; expected one of "
                f"{', '.join(OFFICIAL_RELEASES)}"
            )
        if layout not in _NAME_LAYOUTS[official]:
            fitting = [n for n, layouts in _NAME_LAYOUTS.items() if layout in layouts]
            raise ValueError(
                f"release name {name!r} does not fit {path}: its files have the {layout!r} "
                f"layout ({_LAYOUT_FILES[layout]['ratings']}), which is that of "
                f"{', '.join(fitting)}; {official} has the {_NAME_LAYOUTS[official][0]!r} layout"
            )
        return official
    for candidate in dict.fromkeys((folder_name, path.stem)):
        official = _official(candidate)
        if official is not None and layout in _NAME_LAYOUTS[official]:
            return official
        if official is not None:
            logger.warning(
                "%s is named %s but holds the %s layout; naming it by its layout",
                path,
                official,
                layout,
            )
    if layout == "dat":
        return "ml-1m" if "users.dat" in files else "ml-10m"
    return {"csv": "ml-latest", "csv-renamed": "ml-20m", "100k": "ml-100k"}[layout]
