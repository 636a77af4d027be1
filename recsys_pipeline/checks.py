"""Asset checks: each wraps one validator of ``recsys_pipeline.data.validate``.

Blocking checks stop downstream assets from consuming bad data in the same run.
"""

import datetime as dt

import dagster as dg
import pyarrow as pa

from recsys_pipeline import schema as S
from recsys_pipeline.assets.ingest import (
    clean_links,
    clean_movies,
    clean_ratings,
    clean_tags,
    clean_users,
)
from recsys_pipeline.assets.prepare import SPLIT_INS, split_key, splits_from
from recsys_pipeline.data import validate as V
from recsys_pipeline.data.movielens import detect_release
from recsys_pipeline.data.validate_splits import split_problems
from recsys_pipeline.metadata import findings_result

_RELEASE_IN = {"movielens_release": dg.AssetIn(key=["raw", "movielens_release"])}


@dg.asset_check(asset=clean_ratings, blocking=True)
def ratings_schema(ratings: pa.Table) -> dg.AssetCheckResult:
    """Ratings have exactly the canonical columns and types."""
    return findings_result(V.check_schema(ratings, S.RATINGS_SCHEMA, "ratings"))


@dg.asset_check(asset=clean_ratings, blocking=True)
def no_null_ids(ratings: pa.Table) -> dg.AssetCheckResult:
    """No rating has a null user or item id."""
    return findings_result(V.check_no_null_ids(ratings))


@dg.asset_check(asset=clean_ratings, blocking=True, additional_ins=_RELEASE_IN)
def ratings_on_scale(ratings: pa.Table, movielens_release: dict) -> dg.AssetCheckResult:
    """Every rating is one of the release's allowed values (half stars or whole stars)."""
    release = detect_release(movielens_release["source"], movielens_release["name"])
    allowed = release.rating_scale.allowed_values()
    return findings_result(V.check_rating_values(ratings, allowed),
                           allowed_values=str(allowed))


@dg.asset_check(asset=clean_ratings, blocking=True)
def unique_user_item(ratings: pa.Table) -> dg.AssetCheckResult:
    """At most one rating per (user, item) pair."""
    return findings_result(V.check_unique_pairs(ratings))


@dg.asset_check(asset=clean_ratings, blocking=True)
def timestamps_in_range(ratings: pa.Table) -> dg.AssetCheckResult:
    """Every timestamp lies between 1995-01-01 (MovieLens' start) and now."""
    return findings_result(V.check_timestamps(ratings),
                           earliest=V.EARLIEST_TIMESTAMP.isoformat())


@dg.asset_check(asset=clean_ratings, additional_ins={"movies": dg.AssetIn(key=["clean",
                                                                                "movies"])})
def rated_items_in_movies(ratings: pa.Table, movies: pa.Table) -> dg.AssetCheckResult:
    """Every rated item is listed in movies; otherwise warns with the count of those missing."""
    findings = V.check_items_in_movies(ratings, movies)
    result = findings_result(findings, missing_items=sum(f.count for f in findings))
    return dg.AssetCheckResult(passed=result.passed, metadata=result.metadata,
                               severity=dg.AssetCheckSeverity.WARN)


def _schema_check(asset: dg.AssetsDefinition, table: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name=f"{table}_schema", blocking=True,
                    description=f"{table.capitalize()} have exactly the canonical columns and "
                                "types.")
    def _check(value: pa.Table) -> dg.AssetCheckResult:
        return findings_result(V.check_schema(value, S.TABLE_SCHEMAS[table], table))

    return _check


ingest_checks = [
    ratings_schema, no_null_ids, ratings_on_scale, unique_user_item, timestamps_in_range,
    rated_items_in_movies,
    _schema_check(clean_movies, "movies"), _schema_check(clean_tags, "tags"),
    _schema_check(clean_links, "links"), _schema_check(clean_users, "users"),
]


# --- prepared stage: the rating split ------------------------------------------------------
_SPLIT_CHECKS = {
    "splits_disjoint": "No (user, item) row is in two split tables.",
    "splits_complete": "The split tables together hold exactly the encoded ratings.",
    "no_split_leakage": "Temporal splits: no valid/test row precedes the same user's train "
                        "rows (and, global, the cut); strong generalization: fold-in first.",
    "held_out_users_unseen": "Strong generalization: held-out users never appear in train.",
}


_SPLIT_CHECK_INS = {"encoded": dg.AssetIn(key=["prepared", "encoded_ratings"]),
                    "report": dg.AssetIn(key=split_key("report")), **SPLIT_INS}


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=split_key(S.TRAIN), blocking=True, description=d,
                             additional_deps=[a.key for n, a in _SPLIT_CHECK_INS.items()
                                              if n != S.TRAIN])
           for name, d in _SPLIT_CHECKS.items()],
    ins=_SPLIT_CHECK_INS,
)
def split_checks(encoded: pa.Table, report: dict, **split_tables: pa.Table):
    """Leakage and completeness of the split (one load of the tables, four results)."""
    config, cuts = report["config"], report["report"]
    problems_by_check = split_problems(
        encoded, splits_from(split_tables), config["method"], config["fold_in_by"],
        *(dt.datetime.fromisoformat(cuts[k]) if cuts.get(k) else None
          for k in ("valid_start", "test_start")))
    for name, problems in problems_by_check.items():
        yield dg.AssetCheckResult(
            check_name=name, asset_key=split_key(S.TRAIN), passed=not problems,
            metadata={"violations": len(problems), "method": report["config"]["method"],
                      **({"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))}
                         if problems else {})})


prepare_checks = [split_checks]
