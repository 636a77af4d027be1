"""Ingest stage: a MovieLens release (folder or zip) -> canonical, cleaned Parquet tables.

``raw/movielens_release`` locates (and optionally downloads) the release and records what it
is, with the new users' files stored under ``<lake>/raw/new_users`` and their hashes;
``clean/<table>`` reads one table of it into the canonical schema and cleans it
(``clean/ratings`` appends the recorded new users' ratings first).
"""

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import plots
from recsys_pipeline import schema as S
from recsys_pipeline.data.clean import clean_table
from recsys_pipeline.data.download import download_release
from recsys_pipeline.data.lake import file_sha256
from recsys_pipeline.data.movielens import Release, detect_release, read_table
from recsys_pipeline.data.new_users import (
    ReleaseMismatchError,
    describe_new_users,
    read_new_users,
)
from recsys_pipeline.data.raw_watch import NEW_USERS_DIR
from recsys_pipeline.metadata import markdown_table, png_markdown, table_metadata
from recsys_pipeline.resources import DEFAULT_RELEASE_DIR, LakeResource

GROUP = "ingest"


class MovielensReleaseConfig(dg.Config):
    """Which MovieLens release to ingest."""

    # a release folder or an official zip; "" = the embedded data_lake/raw/ml-latest-small
    path: str = ""
    # an official name (ml-latest-small, ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-32m,
    # ml-latest) or "auto" to detect it from the files
    release: str = "auto"
    # download the named release into data_lake/raw first if it is not there (needs network)
    download: bool = False
    # append the new users stored under data_lake/raw/new_users/*.csv (`recsys-pipeline
    # new-user --persist`) to the release's ratings
    include_new_users: bool = True


def _release_path(config: MovielensReleaseConfig, lake: LakeResource) -> Path:
    if config.download:
        if config.release == "auto":
            raise ValueError("download: true needs an official release name, not 'auto'")
        return download_release(config.release, lake.raw_dir())
    return Path(config.path) if config.path else lake.path(DEFAULT_RELEASE_DIR)


@dg.asset(key_prefix="raw", group_name=GROUP, io_manager_key="json_io_manager",
          kinds={"python", "file"})
def movielens_release(
    context: dg.AssetExecutionContext, config: MovielensReleaseConfig, lake: LakeResource
) -> dict:
    """The MovieLens release being ingested: its name, layout, files and their SHA-256.
    Every table is read once first, so a release that cannot be read changes nothing."""
    release = detect_release(_release_path(config, lake),
                             None if config.release == "auto" else config.release)
    described = release.describe()
    source = Path(release.source)
    hashed = [source] if source.is_file() else [source / f for f in release.files.values()]
    described["sha256"] = {p.name: file_sha256(p) for p in hashed}
    new_users = describe_new_users(lake.raw_dir()) if config.include_new_users else {}
    described["new_users"] = {"dir": str(lake.raw_dir() / NEW_USERS_DIR), "sha256": new_users}
    rows = _read_every_table(release, described)
    context.add_output_metadata({
        "rows_read": dg.MetadataValue.json(rows),
        "release": release.name,
        "layout": release.layout,
        "source": dg.MetadataValue.path(str(source)),
        "tables": ", ".join(release.files),
        "rating_scale": str(release.rating_scale.allowed_values()),
        "files": dg.MetadataValue.md(markdown_table(
            [{"file": k, "sha256": v} for k, v in described["sha256"].items()])),
        "new_user_files": len(new_users),
    })
    return described


def _read_every_table(release: Release, described: dict) -> dict[str, int]:
    """Read every table of the release (ratings with the recorded new users) once and count
    its rows: a file that cannot be read fails here, before this asset records the release
    and before any ``clean/<table>`` is replaced, so a bad release leaves the lake as it was
    (about 3 s more for 25M ratings, bench/README.md)."""
    rows = {}
    for name in release.files:
        table = read_table(release, name)
        if name == "ratings":
            table, _ = _with_new_users(table, release, described)
        rows[name] = table.num_rows
    return rows


def _release(described: dict) -> Release:
    return detect_release(described["source"], described["name"])


def _with_new_users(raw: pa.Table, release: Release, described: dict
                    ) -> tuple[pa.Table, dict[str, object]]:
    """The release's ratings plus the new users' files recorded with the release."""
    recorded = described.get("new_users", {})
    names = sorted(recorded.get("sha256", {}))
    if not names:
        return raw, {"new_user_files": 0}
    folder = Path(recorded["dir"])
    files = [folder / name for name in names]
    for path in files:
        if file_sha256(path) != recorded["sha256"][path.name]:
            raise ValueError(f"{path} changed since raw/movielens_release recorded it; "
                             "re-materialize raw/movielens_release")
    try:
        added = read_new_users(files, release.rating_scale, raw.column(S.USER_ID), release.name)
    except ReleaseMismatchError as exc:  # e.g. users stored for ml-latest-small, now ml-1m
        raise ValueError(f"{exc}. The new users stored under {folder} are added to every "
                         "release ingested; if they were made for another release, ingest "
                         "this one with include_new_users: false (raw__movielens_release's "
                         f"config) or move {folder} aside") from None
    return pa.concat_tables([raw, added.ratings]), {
        "new_user_files": len(files), "new_users": added.users,
        "new_user_ratings": added.ratings.num_rows}


def _rating_histogram(table: pa.Table, lake: LakeResource) -> dict[str, object]:
    counts = pc.value_counts(table[S.RATING]).to_pylist()
    counts.sort(key=lambda c: c["values"])
    labels = [c["values"] for c in counts]
    values = [c["counts"] for c in counts]
    png = plots.bar_chart(labels, values, "Ratings per value", "rating", "ratings",
                          path=lake.path("reports", "clean_ratings_histogram.png"))
    return {
        "rating_histogram": png_markdown(png, "rating histogram"),
        "rating_counts": dg.MetadataValue.md(markdown_table(
            [{"rating": v, "count": n} for v, n in zip(labels, values, strict=True)])),
        "mean_rating": round(pc.mean(table[S.RATING]).as_py() or 0.0, 4),
    }


def _clean_asset(name: str, description: str) -> dg.AssetsDefinition:
    """The ``clean/<name>`` asset: read one table of the release, clean it, report drops."""

    @dg.asset(name=name, key_prefix="clean", group_name=GROUP, description=description,
              ins={"movielens_release": dg.AssetIn(key=["raw", "movielens_release"])},
              kinds={"parquet", "pyarrow"})
    def _asset(context: dg.AssetExecutionContext, movielens_release: dict,
               lake: LakeResource) -> pa.Table:
        release = _release(movielens_release)
        present = name in release.files
        raw = read_table(release, name) if present else S.empty_table(name)
        extra: dict[str, object] = {}
        if name == "ratings":
            raw, extra = _with_new_users(raw, release, movielens_release)
        table, report = clean_table(name, raw)
        meta = {**extra, **table_metadata(table), "present_in_release": present,
                "source_file": release.files.get(name, "(none)"),
                "dropped": dg.MetadataValue.json(report.dropped), **report.as_dict()}
        if name == "ratings" and table.num_rows:
            meta.update(_rating_histogram(table, lake))
        context.add_output_metadata(meta)
        return table

    return _asset


clean_ratings = _clean_asset("ratings", "Ratings in the canonical schema: nulls, exact "
                             "duplicates and superseded (user, item) ratings dropped.")
clean_movies = _clean_asset("movies", "Movies: id, title, year parsed from the title, genres.")
clean_tags = _clean_asset("tags", "Free-text tags users put on movies (empty if the release "
                          "has none).")
clean_links = _clean_asset("links", "IMDb and TMDb ids per movie (empty if the release has "
                           "none).")
clean_users = _clean_asset("users", "User demographics (ml-100k and ml-1m only; empty "
                           "otherwise).")

ingest_assets = [movielens_release, clean_ratings, clean_movies, clean_tags, clean_links,
                 clean_users]
