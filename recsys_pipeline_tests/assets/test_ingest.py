"""Ingest assets and checks, materialized in process on a tmp lake."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.assets.ingest import ingest_assets
from recsys_pipeline.checks import ingest_checks, no_null_ids, timestamps_in_range
from recsys_pipeline.data.lake import read_parquet


def _config(path) -> dg.RunConfig:
    return dg.RunConfig({"raw__movielens_release": {"config": {"path": str(path)}}})


def _checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_ingest_embedded_release(tmp_lake, lake_resources, embedded_release):
    result = dg.materialize([*ingest_assets, *ingest_checks], resources=lake_resources,
                            run_config=_config(embedded_release))
    assert result.success
    ratings = read_parquet(tmp_lake / "clean" / "ratings.parquet")
    assert ratings.schema.equals(S.RATINGS_SCHEMA)
    assert ratings.num_rows == 100_836
    assert read_parquet(tmp_lake / "clean" / "movies.parquet").num_rows == 9_742
    assert read_parquet(tmp_lake / "clean" / "users.parquet").num_rows == 0  # not in release

    meta = result.asset_materializations_for_node("clean__ratings")[0].metadata
    assert meta["dagster/row_count"].value == 100_836
    assert meta["distinct_users"].value == 610
    assert meta["distinct_items"].value == 9_724
    assert len(meta["content_sha256"].value) == 64
    assert meta["path"].value.endswith("clean/ratings.parquet")
    assert "data:image/png;base64," in meta["rating_histogram"].value
    assert (tmp_lake / "reports" / "clean_ratings_histogram.png").is_file()
    release = result.asset_materializations_for_node("raw__movielens_release")[0].metadata
    assert release["release"].value == "ml-latest-small"

    checks = _checks(result)
    assert len(checks) == len(ingest_checks)
    assert all(c.passed for c in checks.values()), {k: c.passed for k, c in checks.items()}

    with duckdb.connect(str(tmp_lake / "lake.duckdb"), read_only=True) as conn:
        n, users = conn.execute(
            "SELECT count(*), count(DISTINCT user_id) FROM clean_ratings").fetchone()
        assert (n, users) == (100_836, 610)
        assert conn.execute("SELECT count(*) FROM clean_movies").fetchone() == (9_742,)


def test_missing_movie_is_reported_as_warning(tmp_lake, lake_resources, tiny_release):
    movies = (tiny_release / "movies.csv").read_text().splitlines()
    (tiny_release / "movies.csv").write_text("\n".join(m for m in movies
                                                       if not m.startswith("3,")) + "\n")
    result = dg.materialize([*ingest_assets, *ingest_checks], resources=lake_resources,
                            run_config=_config(tiny_release))
    assert result.success
    check = _checks(result)["rated_items_in_movies"]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["missing_items"].value == 1


def test_bad_rating_fails_naming_file_and_line_and_writes_nothing(
        tmp_lake, lake_resources, tiny_release):
    lines = (tiny_release / "ratings.csv").read_text().splitlines()
    lines[4] = "2,5,abc,1000000000"
    (tiny_release / "ratings.csv").write_text("\n".join(lines) + "\n")
    result = dg.materialize([*ingest_assets], resources=lake_resources,
                            run_config=_config(tiny_release), raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "ratings.csv" in message and "line 5" in message and "rating" in message
    assert not (tmp_lake / "clean" / "ratings.parquet").exists()
    assert not list((tmp_lake / "clean").glob(".*")) if (tmp_lake / "clean").exists() else True


def _bad_ratings(year: int) -> pa.Table:
    return pa.table({
        S.USER_ID: pa.array([1, 2], S.ID_TYPE),
        S.ITEM_ID: pa.array([1, 1], S.ID_TYPE),
        S.RATING: pa.array([4.0, 3.0], S.RATING_TYPE),
        S.TIMESTAMP: pa.array([dt.datetime(2001, 1, 1, tzinfo=dt.UTC),
                               dt.datetime(year, 1, 1, tzinfo=dt.UTC)], S.TIMESTAMP_TYPE),
    })


def test_blocking_check_stops_downstream(lake_resources):
    @dg.asset(key=["clean", "ratings"])
    def leaky_ratings() -> pa.Table:
        return _bad_ratings(1970)

    @dg.asset(ins={"ratings": dg.AssetIn(key=["clean", "ratings"])})
    def downstream(ratings: pa.Table) -> int:
        return ratings.num_rows

    result = dg.materialize([leaky_ratings, timestamps_in_range, downstream],
                            resources={**lake_resources, "io_manager": dg.mem_io_manager},
                            raise_on_error=False)
    check = _checks(result)["timestamps_in_range"]
    assert not check.passed and check.metadata["violations"].value == 1
    assert "1970" in check.metadata["examples"].value
    assert not result.asset_materializations_for_node("downstream")


def test_checks_pass_and_fail_when_invoked_directly():
    good = _bad_ratings(2002)
    assert no_null_ids(good).passed
    bad = good.set_column(0, S.USER_ID, pa.array([None, 2], S.ID_TYPE))
    result = no_null_ids(bad)
    assert not result.passed and result.metadata["violations"].value == 1


@pytest.mark.parametrize("release_name", ["ml-1m"])
def test_named_release_must_match_files(tmp_lake, lake_resources, tiny_release, release_name):
    config = dg.RunConfig({"raw__movielens_release": {"config": {
        "path": str(tiny_release), "release": release_name}}})
    result = dg.materialize([ingest_assets[0]], resources=lake_resources, run_config=config,
                            raise_on_error=False)
    assert not result.success
    assert not (tmp_lake / "raw" / "movielens_release.json").exists()


def test_empty_and_duplicate_ratings_are_dropped_with_reasons(tmp_lake, lake_resources,
                                                            tiny_release):
    lines = (tiny_release / "ratings.csv").read_text().splitlines()
    first = lines[1].split(",")
    lines += [f"{first[0]},{first[1]},1.0,{int(first[3]) + 5}",  # re-rating: the later wins
              lines[2],                                        # exact duplicate
              "3,7,,1000000000"]                                 # empty rating
    (tiny_release / "ratings.csv").write_text("\n".join(lines) + "\n")
    result = dg.materialize(ingest_assets, resources=lake_resources,
                            run_config=_config(tiny_release))
    meta = result.asset_materializations_for_node("clean__ratings")[0].metadata
    assert meta["dropped"].value == {"null_rating": 1, "exact_duplicate": 1,
                                     "superseded_rating": 1}
    assert meta["dagster/row_count"].value == 30 * 25
    ratings = read_parquet(tmp_lake / "clean" / "ratings.parquet")
    row = ratings.filter(pa.compute.and_(
        pa.compute.equal(ratings[S.USER_ID], int(first[0])),
        pa.compute.equal(ratings[S.ITEM_ID], int(first[1]))))
    assert row[S.RATING].to_pylist() == [1.0]


def _semicolons(ratings: str) -> str:
    return ratings.replace(",", ";")


def _one_timestamp_in_milliseconds(ratings: str) -> str:
    lines = ratings.splitlines()
    lines[-1] += "000"  # passed the reader once, then failed at the table preview
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("spoil", [_semicolons, _one_timestamp_in_milliseconds])
def test_a_release_that_cannot_be_read_leaves_the_lake_as_it_was(
        tmp_lake, lake_resources, tiny_release, tmp_path, spoil):
    assert dg.materialize(ingest_assets, resources=lake_resources,
                          run_config=_config(tiny_release)).success
    before = {p.relative_to(tmp_lake): p.read_bytes()
              for p in (tmp_lake / "clean").rglob("*") if p.is_file()}
    before[Path("raw/movielens_release.json")] = (tmp_lake / "raw" /
                                                  "movielens_release.json").read_bytes()
    bad = tmp_path / "bad_release"
    bad.mkdir()
    movies = (tiny_release / "movies.csv").read_text().splitlines()
    (bad / "movies.csv").write_text("\n".join(movies[:2]) + "\n")  # readable, one movie
    (bad / "tags.csv").write_text("userId,movieId,tag,timestamp\n")
    ratings = (tiny_release / "ratings.csv").read_text()
    (bad / "ratings.csv").write_text(spoil(ratings))

    result = dg.materialize(ingest_assets, resources=lake_resources, run_config=_config(bad),
                            raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "raw__movielens_release"
    assert "ratings.csv" in str(failure.event_specific_data.error)
    after = {p.relative_to(tmp_lake): p.read_bytes()
             for p in (tmp_lake / "clean").rglob("*") if p.is_file()}
    after[Path("raw/movielens_release.json")] = (tmp_lake / "raw" /
                                                 "movielens_release.json").read_bytes()
    assert after == before  # neither the clean tables nor the recorded release changed
