"""The lake's own MLflow store after the lake was moved or copied: its artifact URIs follow.

MLflow's SQLite store keeps absolute ``file://`` URIs: each experiment's artifact root
(``<lake>/mlflow/artifacts``), each run's ``<root>/<run id>/artifacts``, each logged model's
``<root>/models/<model id>/artifacts``, the registered versions' ``storage_location`` and (for
some) ``source``. After ``mv data_lake elsewhere`` they name a place that is gone, so the
champion's weights cannot be loaded; in a copy they name the original lake, where new runs
would write their artifacts. :func:`relocate_store` rewrites them to the lake's own
``mlflow/artifacts``; :func:`ensure_relocated` does it once per store per process, for the
MLflow resource and serving to call before they open the lake's store (by default, or through
a tracking URI that names it: :func:`names_store`).

An artifact root is rewritten only when the lake holds its runs' artifacts (see
:func:`relocate_store`), so a deliberately shared root outside the lake is left alone.

Standard library only (sqlite3): no mlflow, no dagster.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

logger = logging.getLogger(__name__)

STORE_DIR = "mlflow"  # <lake>/mlflow/: mlflow.db and artifacts/
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
ROOT_SUFFIX = f"/{STORE_DIR}/{ARTIFACTS_DIR}"  # what a lake's default artifact root ends with
# (table, column, tag key or None): the columns holding artifact URIs (MLflow 3.x); a table or
# column a schema lacks is skipped. A trace's artifact URI is its mlflow.artifactLocation tag.
URI_COLUMNS = (("experiments", "artifact_location", None), ("runs", "artifact_uri", None),
               ("logged_models", "artifact_location", None),
               ("model_versions", "storage_location", None), ("model_versions", "source", None),
               ("workspaces", "default_artifact_root", None),
               ("trace_tags", "value", "mlflow.artifactLocation"))


@dataclass(frozen=True)
class StoreMove:
    """An artifact root of a lake's store that was another place's, and what became of it."""

    old_root: str  # the URI the store named, e.g. file:///old/lake/mlflow/artifacts
    new_root: str  # the lake's own, e.g. file:///new/lake/mlflow/artifacts
    rows: int  # URI values rewritten (0: left alone)
    left_alone: str = ""  # why it was left alone ("" when rewritten)


def store_db(lake: str | os.PathLike[str]) -> Path:
    """The lake's default store, ``<lake>/mlflow/mlflow.db`` (absolute)."""
    return Path(lake).resolve() / STORE_DIR / DB_FILE


def names_store(lake: str | os.PathLike[str], tracking_uri: str) -> bool:
    """Whether ``tracking_uri`` opens the lake's own store file: a ``sqlite:///`` URI (absolute
    ``sqlite:////abs/path`` or relative to the working directory) of ``<lake>/mlflow/mlflow.db``,
    e.g. README's ``MLFLOW_TRACKING_URI=sqlite:///$PWD/data_lake/mlflow/mlflow.db``."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return False
    path = tracking_uri[len(prefix):].split("?", 1)[0]
    return any(_same_file(Path(candidate), store_db(lake)) for candidate in {path, unquote(path)})


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _uri_path(uri: str) -> Path:
    """The local path of a ``file://`` URI."""
    return Path(url2pathname(urlparse(uri).path))


def _columns(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """``(table, column)`` of every column of :data:`URI_COLUMNS`' tables the store has."""
    found = set()
    for table in {t for t, _, _ in URI_COLUMNS}:
        found |= {(table, row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")')}
    return found


def _foreign_roots(conn: sqlite3.Connection, artifacts: Path) -> list[str]:
    """The experiments' ``file://`` artifact roots that end in ``/mlflow/artifacts`` and are
    not the directory ``artifacts`` (under this or another name, e.g. through a symlink)."""
    roots = {r for (r,) in conn.execute("SELECT DISTINCT artifact_location FROM experiments")
             if isinstance(r, str) and r.startswith("file://") and r.endswith(ROOT_SUFFIX)}
    return sorted(r for r in roots
                  if r != artifacts.as_uri() and not _same_file(_uri_path(r), artifacts))


def _why_left_alone(conn: sqlite3.Connection, columns: set[tuple[str, str]], old: str,
                    artifacts: Path) -> str:
    """Why ``old`` is not this lake's moved root ("" when it is): its runs' folders
    (``<old>/<run id>``) must be in ``artifacts``: at least one, and every one that is still
    under ``old`` (a copy holds them all; a lake sharing a root outside it holds none)."""
    folders: set[str] = set()
    if ("runs", "artifact_uri") in columns:
        prefix = old + "/"
        rows = conn.execute("SELECT artifact_uri FROM runs "
                            "WHERE substr(artifact_uri, 1, length(:p)) = :p", {"p": prefix})
        folders = {unquote(uri[len(prefix):].split("/", 1)[0]) for (uri,) in rows}
    here = {f for f in folders if (artifacts / f).is_dir()}
    if not here:
        return f"no folder of its {len(folders)} runs is in {artifacts}"
    old_dir = _uri_path(old)
    missing = sorted(f for f in folders - here if (old_dir / f).is_dir())
    if missing:
        return (f"{len(missing)} of its runs' folders (e.g. {missing[0]}) are in {old_dir} "
                f"but not in {artifacts}: a shared artifact root, or an unfinished copy?")
    return ""


def _plan(conn: sqlite3.Connection, columns: set[tuple[str, str]], artifacts: Path
          ) -> list[tuple[str, str]]:
    """``(foreign root, why it is left alone or "")`` for each foreign root of the store."""
    return [(old, _why_left_alone(conn, columns, old, artifacts))
            for old in _foreign_roots(conn, artifacts)]


def _rewrite(conn: sqlite3.Connection, columns: set[tuple[str, str]], old: str,
             new: str) -> int:
    """Replace the ``old`` prefix (the root itself, or ``old/...``) by ``new`` in every URI
    column; returns how many values changed. Prefixes compare exactly (``substr``, not
    ``LIKE``: paths may hold ``%`` and ``_``)."""
    params = {"old": old, "prefix": old + "/", "new": new}
    changed = 0
    for table, column, key in URI_COLUMNS:
        if (table, column) not in columns or (key and (table, "key") not in columns):
            continue
        sql = (f'UPDATE "{table}" SET "{column}" = :new || substr("{column}", length(:old) + 1) '
               f'WHERE ("{column}" = :old OR substr("{column}", 1, length(:prefix)) = :prefix)')
        if key:
            sql += " AND key = :key"
        changed += conn.execute(sql, {**params, "key": key}).rowcount
    return changed


def relocate_store(lake: str | os.PathLike[str]) -> list[StoreMove]:
    """Point the lake's default store (``<lake>/mlflow/mlflow.db``) at its own artifacts
    after the lake was moved or copied.

    An experiment whose artifact root is a ``file://`` URI ending in ``/mlflow/artifacts``
    other than this lake's ``mlflow/artifacts`` names another lake's root. Every URI under
    that root (experiments, runs, logged models, registered versions, workspaces, trace
    tags; see :data:`URI_COLUMNS`) is rewritten to the same place under this lake's root, in
    one transaction, when this lake holds the root's runs: at least one run's folder
    ``<root>/<run id>`` is in ``<lake>/mlflow/artifacts``, and no run's folder that still
    exists under the old root is missing here. Otherwise the root is left alone (a root
    shared by design holds runs this lake has not got). Idempotent: a store that names its
    own lake is read (one query) and not written.

    Returns:
        One :class:`StoreMove` per foreign root (empty: no store, or nothing to do).

    Raises:
        ValueError: The store cannot be read or written (e.g. a read-only lake).
    """
    db = store_db(lake)
    if not db.is_file():
        return []
    artifacts = (db.parent / ARTIFACTS_DIR).resolve()
    new = artifacts.as_uri()
    moves = []
    try:
        conn = sqlite3.connect(db, timeout=30, isolation_level=None)
        try:
            columns = _columns(conn)
            if ("experiments", "artifact_location") not in columns:
                return []  # not an MLflow store yet (created, not migrated)
            plan = _plan(conn, columns, artifacts)
            if all(why for _, why in plan):  # nothing to write: no write lock taken
                return [StoreMove(old, new, 0, why) for old, why in plan]
            conn.execute("BEGIN IMMEDIATE")  # concurrent callers: one rewrites, one finds none
            try:
                for old, why in _plan(conn, columns, artifacts):
                    rows = 0 if why else _rewrite(conn, columns, old, new)
                    moves.append(StoreMove(old, new, rows, why))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ValueError(f"MLflow store {db}: cannot point its artifact URIs at {new} "
                         f"({exc})") from exc
    return moves


_checked: set[tuple[str, int, int]] = set()  # (db path, device, inode) checked this process


def ensure_relocated(lake: str | os.PathLike[str]) -> None:
    """:func:`relocate_store` once per store file per process (later calls cost one
    ``stat``; a store file replaced by another at the same path is checked again), logging
    a warning for each root rewritten (old root, new root, rows) or left alone for a reason
    worth a look. A store that cannot be rewritten is logged and left as it is; MLflow's own
    errors follow."""
    db = store_db(lake)
    try:
        stat = db.stat()
    except OSError:
        return
    key = (str(db), stat.st_dev, stat.st_ino)
    if key in _checked:
        return
    try:
        moves = relocate_store(lake)
    except ValueError as exc:
        logger.warning("%s", exc)
        return
    _checked.add(key)
    for move in moves:
        if move.rows:
            logger.warning("MLflow store %s: the lake was moved or copied; %d artifact URIs "
                           "rewritten from %s to %s", db, move.rows, move.old_root,
                           move.new_root)
        elif move.left_alone.startswith("no folder"):  # e.g. a root shared by design
            logger.info("MLflow store %s: artifact root %s left as is: %s", db,
                        move.old_root, move.left_alone)
        else:
            logger.warning("MLflow store %s: artifact root %s left as is: %s", db,
                           move.old_root, move.left_alone)
