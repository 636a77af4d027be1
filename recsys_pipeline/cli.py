"""The ``recsys-pipeline`` command line: SQL over the lake, downloads, view refresh, and answers
from a trained model (recommend, check-user, similar, new-user) in original MovieLens ids.

It needs no dagster; mlflow is imported only to look up the champion or an ``--run-id``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from recsys_pipeline.data.lakedb import DB_FILE_NAME

if TYPE_CHECKING:
    from recsys_pipeline.serving.lake_models import ServingModel

DEFAULT_LAKE = "data_lake"


def format_number(v: float) -> str:
    """A float for reading: every integer digit and up to 4 decimals (353083, 1234567.5,
    3.3 for a float32 3.2999999), 4 significant digits below 1 (0.0001235)."""
    if not math.isfinite(v) or v == 0:
        return str(v) if v != 0 else "0"
    if abs(v) >= 1:
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return f"{v:.4g}"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[object]],
                 max_rows: int | None = None) -> str:
    """Rows as an aligned text table, with a line saying how many were shown."""
    shown = list(rows if max_rows is None else rows[:max_rows])

    def cell(v: object) -> str:
        if isinstance(v, float):
            return format_number(v)
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


def write_rows(out: object, fmt: str, columns: Sequence[str],
               rows: Sequence[Sequence[object]]) -> None:
    """Rows at full precision for other tools: ``csv`` (header + rows) or ``json`` (one
    object per line); lists join with ``|`` in CSV, dates and times as ISO text."""
    import csv
    import datetime as dt
    import decimal
    import json

    def plain(v: object) -> object:
        if isinstance(v, dt.date | dt.time):
            return v.isoformat()
        if isinstance(v, decimal.Decimal):
            return float(v)
        if fmt == "json" and isinstance(v, float) and not math.isfinite(v):
            return None  # strict JSON has no NaN / Infinity
        return v

    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")  # type: ignore[arg-type]
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["|".join(map(str, v)) if isinstance(v, list) else plain(v)
                             for v in row])
        return
    for row in rows:
        print(json.dumps({c: plain(v) for c, v in zip(columns, row, strict=True)},
                         default=str, allow_nan=False), file=out)  # type: ignore[arg-type]


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
    if args.max_rows is not None and args.max_rows < 0:
        raise ValueError(f"--max-rows {args.max_rows} must be >= 0")
    params = _parse_params(args.param)
    if args.saved:
        query = get_saved_query(args.saved)
        sql, bound = query.sql, query.bind(params)
    elif args.sql:
        sql, bound = args.sql, params or None
    else:
        raise ValueError("give a SQL statement, --saved NAME or --list")
    columns, rows = run_query(Path(args.lake) / DB_FILE_NAME, sql, bound)
    if args.format == "table":
        limit = 50 if args.max_rows is None else args.max_rows
        print(format_table(columns, rows, limit or None))
    else:  # for other tools: every row unless --max-rows says otherwise
        write_rows(sys.stdout, args.format, columns, rows[:args.max_rows or None])
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from recsys_pipeline.data.download import GROUPLENS_URL, download_release

    def progress(line: str) -> None:  # what is fetched, how far along, warnings
        print(line, file=sys.stderr, flush=True)

    path = download_release(args.name, Path(args.lake) / "raw",
                            base_url=args.base_url or GROUPLENS_URL, progress=progress)
    print(f"{args.name}: {path}")
    print("ingest it: write this run config to release.yaml\n"
          f"  ops:\n    raw__movielens_release:\n      config: {{path: \"{path}\"}}\n"
          "then: dagster job execute -m recsys_pipeline.definitions -j ingest_job "
          "-c release.yaml")
    return 0


def _cmd_views(args: argparse.Namespace) -> int:
    import duckdb

    from recsys_pipeline.data.lakedb import refresh_views

    with duckdb.connect(str(Path(args.lake) / DB_FILE_NAME)) as conn:
        names = refresh_views(conn, args.lake)
    print("views: " + (", ".join(names) if names else "(none: the lake has no Parquet yet)"))
    _relocate_mlflow_store(args.lake)
    return 0


def _relocate_mlflow_store(lake: str) -> None:
    """Point the lake's MLflow store at the lake's own artifacts after a move or copy, and
    say what was done (nothing printed when the lake has no store)."""
    from recsys_pipeline.serving.lake_store import relocate_store, store_db

    if not store_db(lake).is_file():
        return
    moves = relocate_store(lake)
    for move in moves:
        if move.rows:
            print(f"mlflow: {move.rows} artifact URIs moved from {move.old_root} to "
                  f"{move.new_root}")
        else:
            print(f"mlflow: artifact root {move.old_root} left as is: {move.left_alone}")
    if not moves:
        print("mlflow: nothing to move (the store names no other lake's mlflow/artifacts)")


def _print_table(table: object, max_rows: int | None = None) -> None:
    print(format_table(table.column_names, [list(r.values()) for r in table.to_pylist()],
                       max_rows))


def _serving_model(args: argparse.Namespace, by: str = "ranking") -> object:
    """The ``--model`` / ``--run-id`` model, else the champion chosen ``by`` ranking quality
    (lists of movies) or RMSE (predicted ratings)."""
    from recsys_pipeline.serving.lake_models import CHOSEN_BY, resolve_model

    served = resolve_model(args.lake, args.model, args.run_id, args.tracking_uri, by=by)
    why = ""
    if not args.model and not args.run_id and served.source.startswith("mlflow run"):
        why = f" ({CHOSEN_BY[by]})"
    print(f"model: {served.name} ({served.model.family}) from {served.source}{why}")
    return served


def _cmd_recommend(args: argparse.Namespace) -> int:
    from recsys_pipeline.serving.lake_models import load_movies, load_seen
    from recsys_pipeline.serving.recommend import recommend

    served = _serving_model(args, by="embeddings" if args.by_embedding else "ranking")
    known = served.maps.has_user(args.user)
    if args.by_embedding:
        from recsys_pipeline.serving.similar import recommend_by_embedding

        if not known and _has_lake_ratings(args.lake, args.user):
            raise ValueError(f"user_id {args.user} is not one of the {served.maps.n_users} users "
                             f"{served.name} was trained on, so has no embedding; `recommend "
                             f"--user {args.user}` without --by-embedding folds them in from "
                             "their lake ratings")

        table = recommend_by_embedding(served.model, served.maps, load_movies(args.lake),
                                       args.user, args.k, load_seen(args.lake, served.maps))
        print(f"top {args.k} unrated movies for user {args.user} by user·item embedding "
              "similarity; predicted = the full model's score, model_rank = its rank there:")
        _print_table(table)
        return 0
    if not known and _recommend_folded_in(args, served):
        return 0
    table = recommend(served.model, served.maps, load_movies(args.lake), args.user, args.k,
                      load_seen(args.lake, served.maps))
    print(f"top {args.k} unrated movies for user {args.user}:")
    _print_table(table)
    return 0


def _has_lake_ratings(lake: str, user_id: int) -> bool:
    import numpy as np

    from recsys_pipeline.serving.lake_models import lake_user_ratings

    return lake_user_ratings(lake, np.asarray([user_id])).num_rows > 0


def _recommend_folded_in(args: argparse.Namespace, served: ServingModel) -> bool:
    """A user the model does not know but the lake does (e.g. a stored new user the champion
    was trained without): fold their lake ratings in, as new-user does with a file."""
    import numpy as np

    from recsys_pipeline.serving.lake_models import fold_in_lake_users, load_movies

    folded = fold_in_lake_users(args.lake, served, np.asarray([args.user]))
    if args.user not in folded:
        return False  # no lake ratings either: the usual unknown-user error
    user = folded[args.user]
    print(f"user {args.user} is not one of the {served.maps.n_users} users {served.name} was "
          f"trained on: folded in from their {len(user.item_idx)} ratings in clean/ratings "
          f"(as new-user does); a retrain serves them from the model itself, unless the "
          f"prepare filters leave them out")
    print(f"top {args.k} unrated movies for user {args.user}:")
    _print_table(user.recommend(served.maps, load_movies(args.lake), args.k))
    return True


def _cmd_check_user(args: argparse.Namespace) -> int:
    import numpy as np

    from recsys_pipeline import schema as S
    from recsys_pipeline.serving.check_user import check_user
    from recsys_pipeline.serving.lake_models import lake_user_ratings, load_movies, load_split

    served = _serving_model(args, by="rmse")
    train = None  # only a user the model lacks needs their training rows (to fold them in)
    if not served.maps.has_user(args.user):
        train = lake_user_ratings(args.lake, np.asarray([args.user]), split="train")
    held_out = load_split(args.lake, args.split)
    if not np.any(held_out.column(S.USER_ID).to_numpy() == args.user):
        path = Path(args.lake).joinpath("prepared", "splits", f"{args.split}.parquet")
        after = ("; their ratings in clean/ratings came after the split (a new user?): "
                 "prepare_job (or full_pipeline_job) splits them"
                 if train is not None and train.num_rows == 0
                 and _has_lake_ratings(args.lake, args.user) else "")
        raise ValueError(f"user_id {args.user} has no rating in the {args.split} split ({path}, "
                         f"{held_out.num_rows} rows){after}")
    check = check_user(served.model, served.maps, load_movies(args.lake), held_out, args.user,
                       args.p, latest=args.latest, seed=args.seed, train_table=train)
    if check.folded_in:
        print(f"user {args.user} is not one of the {served.maps.n_users} users {served.name} "
              f"was trained on: folded in from their {check.folded_in} train-split ratings "
              f"(as new-user does); their {args.split} ratings below were not used")
    how = "newest" if args.latest else "random"
    print(f"user {check.user_id}: {check.table.num_rows} {how} of {check.n_user_ratings} "
          f"{args.split} ratings")
    _print_table(check.table)
    skipped = f"; {check.skipped_items} of movies the model does not know left out" \
        if check.skipped_items else ""
    print(f"user  RMSE {check.user_rmse:.4f}  MAE {check.user_mae:.4f} "
          f"({check.n_user_ratings} ratings{skipped})")
    left_out = f"; {check.n_left_out} more of users or movies it was not trained on left out" \
        if check.n_left_out else ""
    print(f"model RMSE {check.model_rmse:.4f}  MAE {check.model_mae:.4f} "
          f"({check.n_ratings} {args.split} ratings{left_out})")
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    from recsys_pipeline.serving.lake_models import load_movies, train_support
    from recsys_pipeline.serving.similar import similar_items

    served = _serving_model(args, by="embeddings")
    support = train_support(args.lake, served.maps) if args.min_ratings else None
    table = similar_items(served.model, served.maps, load_movies(args.lake), args.item, args.k,
                         support, args.min_ratings)
    print(f"{args.k} movies most similar to item {args.item} (cosine of item embeddings; "
          f"movies with at least {args.min_ratings} training ratings):")
    _print_table(table)
    if table.num_rows == 0 and support is not None:
        others = support.copy()
        others[served.maps.to_item_idx([args.item])] = 0
        print(f"no other movie has {args.min_ratings} or more training ratings (the most any "
              f"has: {int(others.max())}); lower --min-ratings")
    return 0


def _cmd_new_user(args: argparse.Namespace) -> int:
    from recsys_pipeline.data.raw_watch import ingested_rating_scale
    from recsys_pipeline.serving.fold_in import FoldInConfig, fold_in
    from recsys_pipeline.serving.lake_models import load_movies
    from recsys_pipeline.serving.new_user import (
        overlapping_new_users,
        parse_new_user_ratings,
        persist_new_user,
    )

    movies = load_movies(args.lake)
    ratings = parse_new_user_ratings(args.ratings, movies, args.min_ratings,
                                     ingested_rating_scale(Path(args.lake) / "raw"))
    served = _serving_model(args)
    folded = fold_in(served.model, ratings, served.maps, FoldInConfig(unknown="skip"))
    skipped = f", {len(folded.skipped_item_ids)} movies unknown to the model skipped" \
        if folded.skipped_item_ids else ""
    fit = f", fit RMSE {folded.fit_rmse:.4f}" if math.isfinite(folded.fit_rmse) else ""
    print(f"new user: {ratings.num_rows} ratings, fit by {folded.method}{fit}{skipped}")
    _print_table(folded.recommend(served.maps, movies, args.k))
    if args.persist:
        stored = persist_new_user(ratings, Path(args.lake) / "raw")
        again = " already (same ratings; nothing written)" if stored.stored_before else ""
        print(f"stored{again} as user_id {stored.user_id}: {stored.path}")
        for user, path, common in overlapping_new_users(Path(args.lake) / "raw", ratings):
            if user != stored.user_id:
                print(f"note: stored new user {user} ({path}) rated {common} of these "
                      f"{ratings.num_rows} movies; if that is the same person, delete or edit "
                      "one of the two files so they are not counted twice")
    return 0


def _movie_ids(text: str) -> list[int]:
    """``--after``'s comma-separated movieIds, oldest first."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    bad = [part for part in ids if not part.lstrip("-").isdigit()]
    if not ids or bad:
        raise argparse.ArgumentTypeError(f"expected comma-separated movieIds, oldest first "
                                         f"(e.g. 1,260,1196); not a movieId: {bad or text!r}")
    return [int(part) for part in ids]


def _cmd_next(args: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa

    from recsys_pipeline.serving.lake_models import (
        CHOSEN_BY,
        load_movies,
        resolve_session_model,
    )
    from recsys_pipeline.serving.next_items import next_items
    from recsys_pipeline.serving.tables import movie_details

    if args.k < 1:
        raise ValueError(f"-k {args.k}: the list needs at least one movie")
    served = resolve_session_model(args.lake, args.model, args.tracking_uri)
    why = "" if args.model else f" ({CHOSEN_BY['next']})"
    print(f"model: {served.name} ({served.model.family}) from {served.source}{why}")
    after = np.asarray(args.after, np.int64)
    lists = next_items(served.model, served.item_ids, served.width,
                       np.zeros(len(after), np.int64), 1, after, args.k)
    unknown = sorted(set(args.after) - set(served.item_ids.tolist()))
    if unknown:
        print(f"left out, not in {served.name}'s vocabulary: {', '.join(map(str, unknown))}")
    if len(lists.empty_sessions):
        raise ValueError(f"none of the movies {args.after} is in {served.name}'s vocabulary "
                         f"of {len(served.item_ids)} movies: nothing to go on")
    used = [i for i in args.after if i not in unknown][-served.width:]
    print(f"top {len(lists.item_id)} movies to watch after {', '.join(map(str, used))} "
          f"(the last {served.width} known movies count; those given are left out):")
    details = movie_details(lists.item_id, load_movies(args.lake))
    _print_table(pa.table({"rank": lists.rank, "item_id": lists.item_id,
                           "title": details.column("title"), "score": lists.score}))
    return 0


# The champion each command serves when neither --model nor --run-id is given (as
# serving.lake_models.CHOSEN_BY picks it), for its --model help.
_DEFAULT_MODEL = {
    "ranking": "the MLflow champion that ranks best, by validation NDCG@10 on the per-user "
               "split",
    "rmse": "the MLflow champion with the best validation RMSE",
    "embeddings": "of the MLflow champions with item embeddings (mf, mlp, neumf, deepfm, "
                  "two_tower), the one that ranks best, by validation NDCG@10 on the per-user "
                  "split",
}


def _add_model_args(p: argparse.ArgumentParser, by: str = "ranking",
                    by_embedding: bool = False) -> None:
    default = _DEFAULT_MODEL[by]
    if by_embedding:  # recommend --by-embedding serves the embeddings champion
        default += "; with --by-embedding, " + _DEFAULT_MODEL["embeddings"]
    p.add_argument("--model", metavar="NAME",
                   help=f"a model folder of the lake, e.g. mf or mf_model (default: {default}; "
                        "with no such champion, mf_model)")
    p.add_argument("--run-id", metavar="ID", help="use the weights logged in this MLflow run "
                   "(rating models and two-tower)")
    p.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<lake>/mlflow/mlflow.db)")


def _add_serving_parsers(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("recommend", help="a user's top-k unrated movies",
                       description="A user's k best-scored movies they have not rated: every "
                                   "rating in the lake's clean/ratings counts, the held-out "
                                   "valid and test ones too.")
    r.add_argument("--user", type=int, required=True, help="MovieLens userId")
    r.add_argument("-k", type=int, default=10, help="list length (default 10)")
    r.add_argument("--by-embedding", action="store_true",
                   help="rank by user·item embedding similarity and show the full model's "
                        "predicted score and rank beside each pick (mf, mlp, neumf, deepfm, "
                        "two_tower)")
    _add_model_args(r, by_embedding=True)
    r.set_defaults(func=_cmd_recommend)

    c = sub.add_parser("check-user", help="a user's held-out ratings beside the predictions",
                       description="p held-out ratings of a user, actual vs predicted, and the "
                                   "user's RMSE/MAE against the model's overall.")
    c.add_argument("--user", type=int, required=True, help="MovieLens userId")
    c.add_argument("-p", type=int, default=10, help="ratings to show (default 10)")
    c.add_argument("--latest", action="store_true", help="the p newest instead of a sample")
    c.add_argument("--split", default="test", choices=("test", "valid"),
                   help="held-out split (default test)")
    c.add_argument("--seed", type=int, default=0, help="seeds the sample (default 0)")
    _add_model_args(c, by="rmse")
    c.set_defaults(func=_cmd_check_user)

    s = sub.add_parser("similar", help="movies with the most similar item embeddings",
                       description="The k movies whose item embeddings have the largest "
                                   "cosine with the given movie's (mf, mlp, neumf, deepfm; "
                                   "two_tower: its item-tower vectors).")
    s.add_argument("--item", type=int, required=True, help="MovieLens movieId")
    s.add_argument("-k", type=int, default=10, help="list length (default 10)")
    s.add_argument("--min-ratings", type=int, default=10, metavar="N",
                   help="list only movies with at least N ratings in the training split: "
                        "embeddings of rarely rated movies stay near their random start "
                        "(default 10; 0 lists every movie)")
    _add_model_args(s, by="embeddings")
    s.set_defaults(func=_cmd_similar)

    x = sub.add_parser("next", help="the movies to watch next after a sequence of movies",
                       description="A next-item model's top-k movies to watch after the given "
                                   "movies (a session: oldest first), the given ones left out. "
                                   "Movies the model never saw are left out of the input.")
    x.add_argument("--after", type=_movie_ids, required=True, metavar="IDS",
                   help="comma-separated movieIds, oldest first, e.g. 1,260,1196")
    x.add_argument("-k", type=int, default=10, help="list length (default 10)")
    x.add_argument("--model", metavar="NAME",
                   help="a next-item model folder of the lake: gru4rec, sasrec or "
                        "cooccurrence (default: the MLflow next-item champion with the best "
                        "validation NDCG@10)")
    x.add_argument("--tracking-uri", metavar="URI",
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///<lake>/mlflow/mlflow.db)")
    x.set_defaults(func=_cmd_next)

    n = sub.add_parser("new-user", help="recommend for a new user from a ratings CSV",
                       description="Fold a new user's ratings (CSV with movieId,rating or "
                                   "title,rating) into the model, without retraining, and "
                                   "recommend; --persist stores them under <lake>/raw/new_users.")
    n.add_argument("--ratings", required=True, metavar="FILE", help="the ratings CSV")
    n.add_argument("-k", type=int, default=10, help="list length (default 10)")
    n.add_argument("--min-ratings", type=int, default=20, help="fewest ratings (default 20)")
    n.add_argument("--persist", action="store_true",
                   help="also store the ratings as a new user in <lake>/raw/new_users/")
    _add_model_args(n)
    n.set_defaults(func=_cmd_new_user)


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
    q.add_argument("--max-rows", type=int, default=None,
                   help="rows to print (default: 50 in the table, all in csv / json; 0 = all)")
    q.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default; floats to 4 decimals), or csv / json lines at full "
                        "precision")
    q.set_defaults(func=_cmd_query)

    d = sub.add_parser("download", help="download an official MovieLens zip (needs network, "
                       "or the zip placed in <lake>/raw by hand)")
    d.add_argument("name", help="ml-latest-small, ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ...")
    d.add_argument("--base-url", default=None, metavar="URL",
                   help="where the zips and their .md5 live (default: files.grouplens.org; "
                        "a file:// mirror works)")
    d.set_defaults(func=_cmd_download)

    v = sub.add_parser("views", help="(re)create the DuckDB views over the lake's Parquet "
                       "and point its MLflow store at its own artifacts (after a move or copy)")
    v.set_defaults(func=_cmd_views)
    _add_serving_parsers(sub)
    from recsys_pipeline import cli_export, cli_tune

    cli_tune.add_parser(sub)
    cli_export.add_parsers(sub)
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
