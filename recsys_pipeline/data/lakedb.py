"""DuckDB as the read-only SQL layer over the lake's Parquet files.

The persistent database file (``data_lake/lake.duckdb``) holds only *views*: one per Parquet
file of the lake, named after its path (``clean/ratings.parquet`` -> ``clean_ratings``). The
Parquet files stay the storage of record; the views are refreshed whenever an asset writes one.
Saved exploratory queries live as ``.sql`` files in ``recsys_pipeline/queries``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

DB_FILE_NAME = "lake.duckdb"
# top-level lake folders whose Parquet files are not lake tables: MLflow's artifact store
# (id maps logged with every run) and the ``recsys-pipeline export`` folders
NOT_TABLES = frozenset({"mlflow", "exports"})
_VIEW_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def view_name(lake_root: str | Path, parquet_path: str | Path) -> str:
    """View name of a lake file: its path under the lake root, ``/`` -> ``_``, no extension."""
    rel = Path(parquet_path).resolve().relative_to(Path(lake_root).resolve())
    name = "_".join(rel.with_suffix("").parts)
    if not _VIEW_NAME_OK.match(name):
        raise ValueError(f"{parquet_path}: cannot name a view {name!r}; use [A-Za-z0-9_] names")
    return name


def _quote_path(path: Path) -> str:
    return "'" + str(path.resolve()).replace("'", "''") + "'"


def create_view(conn: duckdb.DuckDBPyConnection, name: str, parquet_path: str | Path) -> None:
    """``CREATE OR REPLACE VIEW name`` over one Parquet file (absolute path)."""
    source = _quote_path(Path(parquet_path))
    conn.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM read_parquet({source})')


def refresh_views(conn: duckdb.DuckDBPyConnection, lake_root: str | Path) -> list[str]:
    """Make the views match the lake: one per Parquet file, none for files that are gone.

    Args:
        conn: a writable connection to the lake database.
        lake_root: the lake folder; every ``*.parquet`` below it gets a view, except in hidden
            folders and the top-level ``NOT_TABLES`` (``mlflow/``, ``exports/``).

    Returns:
        The sorted names of the views now defined.
    """
    root = Path(lake_root)
    wanted = {
        view_name(root, p): p
        for p in sorted(root.rglob("*.parquet"))
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.relative_to(root).parts[0] not in NOT_TABLES
    }
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'"
        ).fetchall()
    }
    for stale in sorted(existing - wanted.keys()):
        conn.execute(f'DROP VIEW IF EXISTS "{stale}"')
    for name, path in wanted.items():
        create_view(conn, name, path)
    return sorted(wanted)


@dataclass(frozen=True)
class SavedQuery:
    """A named exploratory query: SQL with ``$param`` placeholders and their defaults."""

    name: str
    description: str
    sql: str
    params: dict[str, str]

    def bind(self, overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Parameter values: defaults, replaced by ``overrides``; numbers parsed as numbers."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            raise ValueError(
                f"query {self.name!r} has no parameter {unknown}; it takes {sorted(self.params)}"
            )
        values = {**self.params, **overrides}
        return {k: _parse_number(k, v) for k, v in values.items()}


def _parse_number(key: str, value: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _parse_saved(name: str, text: str) -> SavedQuery:
    description, params = "", {}
    for line in text.splitlines():
        if m := re.match(r"^--\s*description:\s*(.+)$", line):
            description = m.group(1).strip()
        elif m := re.match(r"^--\s*param:\s*(\w+)\s*=\s*(.+)$", line):
            params[m.group(1)] = m.group(2).strip()
    return SavedQuery(name=name, description=description, sql=text, params=params)


def saved_queries() -> dict[str, SavedQuery]:
    """All saved queries shipped in ``recsys_pipeline/queries``, by name (the file stem)."""
    folder = resources.files("recsys_pipeline") / "queries"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            name = entry.name[: -len(".sql")]
            out[name] = _parse_saved(name, entry.read_text(encoding="utf-8"))
    return out


def get_saved_query(name: str) -> SavedQuery:
    """The saved query ``name``, or a ``ValueError`` listing the available names."""
    queries = saved_queries()
    if name not in queries:
        raise ValueError(f"no saved query {name!r}; available: {', '.join(queries)}")
    return queries[name]


def _check_views_in_lake(conn: duckdb.DuckDBPyConnection, db_path: Path) -> None:
    """Raise when a view reads a Parquet file outside the lake that holds ``db_path``: a
    copied lake's views still read the original's files and would answer for it."""
    root = db_path.parent.resolve()
    for name, sql in conn.execute("SELECT view_name, sql FROM duckdb_views() "
                                  "WHERE NOT internal").fetchall():
        for quoted in re.findall(r"read_parquet\('((?:[^']|'')*)'\)", sql or ""):
            source = Path(quoted.replace("''", "'"))
            if not source.is_relative_to(root):
                raise ValueError(f"{db_path}: view {name} reads {source}, outside this lake "
                                 "(was it copied or moved?): run `recsys-pipeline --lake "
                                 f"{db_path.parent} views` to recreate the views")


def run_query(
    db_path: str | Path, sql: str, params: Mapping[str, Any] | None = None
) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` on a read-only connection to the lake database.

    Args:
        db_path: the lake's DuckDB file; it must exist (materialize an ingest asset first).
        sql: one SQL statement; ``$name`` placeholders are bound from ``params``.
        params: values for the placeholders.

    Returns:
        Column names and result rows; 4-byte ``FLOAT`` values come as the shortest Python
        float that reads back to the same float32 (0.1, not 0.10000000149011612).
    """
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no lake database yet; run `make demo` or "
            "`dagster job execute -m recsys_pipeline.definitions -j ingest_job` first"
        )
    with duckdb.connect(str(path), read_only=True) as conn:
        _check_views_in_lake(conn, path)
        cursor = conn.execute(sql, dict(params) if params else None)
        description = cursor.description or []
        rows = cursor.fetchall()
    columns = [d[0] for d in description]
    float32 = [i for i, d in enumerate(description) if str(d[1]) == "FLOAT"]
    if float32 and rows:
        rows = [_short_float32(row, float32) for row in rows]
    return columns, rows


def _short_float32(row: tuple, positions: list[int]) -> tuple:
    """``row`` with its float32 values at ``positions`` as their shortest round-trip float
    (DuckDB hands a FLOAT out widened to double: 0.1f -> 0.10000000149011612)."""
    values = list(row)
    for i in positions:
        if values[i] is not None:
            values[i] = float(str(np.float32(values[i])))
    return tuple(values)
