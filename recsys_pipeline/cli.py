"""The ``recsys-pipeline`` command line: SQL over the lake, downloads, view refresh.

It needs neither dagster nor mlflow, so it starts fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from recsys_pipeline.data.lakedb import DB_FILE_NAME

DEFAULT_LAKE = "data_lake"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[object]],
                 max_rows: int | None = None) -> str:
    """Rows as an aligned text table, with a line saying how many were shown."""
    shown = list(rows if max_rows is None else rows[:max_rows])

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.0f}"
        if isinstance(v, list):
            return "|".join(map(str, v))
        return "NULL" if v is None else str(v)

    text = [[cell(v) for v in r] for r in shown]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r[i], int | float) or r[i] is None for r in shown) and shown
               for i in range(len(columns))]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric, strict=True)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)] + [line(r) for r in text]
    more = f" (showing {len(shown)})" if len(shown) < len(rows) else ""
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''}{more})")
    return "\n".join(out)


def _parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE")
        params[key.strip()] = value.strip()
    return params


def _cmd_query(args: argparse.Namespace) -> int:
    from recsys_pipeline.data.lakedb import get_saved_query, run_query, saved_queries

    if args.list:
        for q in saved_queries().values():
            params = ", ".join(f"{k}={v}" for k, v in q.params.items())
            print(f"{q.name:<20} {q.description}" + (f"  [{params}]" if params else ""))
        return 0
    params = _parse_params(args.param)
    if args.saved:
        query = get_saved_query(args.saved)
        sql, bound = query.sql, query.bind(params)
    elif args.sql:
        sql, bound = args.sql, params or None
    else:
        raise ValueError("give a SQL statement, --saved NAME or --list")
    columns, rows = run_query(Path(args.lake) / DB_FILE_NAME, sql, bound)
    print(format_table(columns, rows, args.max_rows))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from recsys_pipeline.data.download import download_release

    path = download_release(args.name, Path(args.lake) / "raw")
    print(f"{args.name}: {path}")
    print("ingest it with: dagster job execute -m recsys_pipeline.definitions -j ingest_job "
          f"--config-json '{{\"ops\": {{\"raw__movielens_release\": {{\"config\": "
          f"{{\"path\": \"{path}\"}}}}}}}}'")
    return 0


def _cmd_views(args: argparse.Namespace) -> int:
    import duckdb

    from recsys_pipeline.data.lakedb import refresh_views

    with duckdb.connect(str(Path(args.lake) / DB_FILE_NAME)) as conn:
        names = refresh_views(conn, args.lake)
    print("views: " + (", ".join(names) if names else "(none: the lake has no Parquet yet)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``recsys-pipeline``."""
    parser = argparse.ArgumentParser(prog="recsys-pipeline", description=__doc__)
    parser.add_argument("--lake", default=DEFAULT_LAKE, help="lake folder (default: data_lake)")
    sub = parser.add_subparsers(dest="command", required=True)

    q = sub.add_parser("query", help="run SQL over the lake's views (read-only)",
                       description="Run SQL over the lake (views such as clean_ratings, "
                                   "clean_movies) on a read-only DuckDB connection.")
    q.add_argument("sql", nargs="?", help="a SQL statement")
    q.add_argument("--saved", metavar="NAME", help="run a saved query by name")
    q.add_argument("--list", action="store_true", help="list the saved queries")
    q.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a $NAME parameter of the query (repeatable)")
    q.add_argument("--max-rows", type=int, default=50, help="rows to print (default 50)")
    q.set_defaults(func=_cmd_query)

    d = sub.add_parser("download", help="download an official MovieLens zip (needs network)")
    d.add_argument("name", help="ml-latest-small, ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ...")
    d.set_defaults(func=_cmd_download)

    v = sub.add_parser("views", help="(re)create the DuckDB views over the lake's Parquet")
    v.set_defaults(func=_cmd_views)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; errors print one line naming the problem and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        print(f"recsys-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # duckdb errors (bad SQL, missing view) have their own types
        if type(exc).__module__.startswith("duckdb") or type(exc).__module__ == "_duckdb":
            print(f"recsys-pipeline {args.command}: SQL error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
