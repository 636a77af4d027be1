"""New users stored under raw/new_users are appended to clean/ratings by the next ingest."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.assets.ingest import ingest_assets
from recsys_pipeline.data.lake import read_parquet
from recsys_pipeline.data.movielens import HALF_STARS, WHOLE_STARS
from recsys_pipeline.data.new_users import ReleaseMismatchError, new_user_files, read_new_users
from recsys_pipeline.serving.new_user import persist_new_user


def _ratings(items: list[int], stars: list[float]) -> pa.Table:
    return pa.table({S.ITEM_ID: pa.array(items, pa.int32()),
                     S.RATING: pa.array(stars, pa.float32())})


def _ingest(lake_resources, release, **extra) -> dg.ExecuteInProcessResult:
    config = {"path": str(release), **extra}
    return dg.materialize(ingest_assets, resources=lake_resources,
                          run_config=dg.RunConfig({"raw__movielens_release": {"config": config}}))


def test_persisted_users_are_ingested_with_the_release(tmp_lake, lake_resources, tiny_release):
    raw = tmp_lake / "raw"
    first = persist_new_user(_ratings([1, 2, 3], [4.5, 3.0, 5.0]), raw, timestamp=1_700_000_000)
    second = persist_new_user(_ratings([4, 5], [1.0, 2.5]), raw, timestamp=1_700_000_001)
    assert (first.user_id, second.user_id) == (31, 32)  # above the release's 30 users

    result = _ingest(lake_resources, tiny_release)
    assert result.success
    ratings = read_parquet(tmp_lake / "clean" / "ratings.parquet")
    assert ratings.num_rows == 30 * 25 + 5
    new = ratings.filter(pc.greater(ratings[S.USER_ID], 30)).sort_by([(S.USER_ID, "ascending"),
                                                                      (S.ITEM_ID, "ascending")])
    assert new.column(S.USER_ID).to_pylist() == [31, 31, 31, 32, 32]
    assert new.column(S.ITEM_ID).to_pylist() == [1, 2, 3, 4, 5]
    assert new.column(S.RATING).to_pylist() == [4.5, 3.0, 5.0, 1.0, 2.5]
    meta = result.asset_materializations_for_node("clean__ratings")[0].metadata
    assert meta["new_user_files"].value == 2 and meta["new_users"].value == 2
    assert meta["new_user_ratings"].value == 5
    release = result.output_for_node("raw__movielens_release")
    assert sorted(release["new_users"]["sha256"]) == ["user_31.csv", "user_32.csv"]

    # the switch leaves them out
    without = _ingest(lake_resources, tiny_release, include_new_users=False)
    assert without.success
    assert read_parquet(tmp_lake / "clean" / "ratings.parquet").num_rows == 30 * 25


def test_a_new_user_file_reusing_a_release_id_fails_naming_the_file(tmp_lake, lake_resources,
                                                                    tiny_release):
    folder = tmp_lake / "raw" / "new_users"
    folder.mkdir()
    bad = folder / "user_7.csv"
    bad.write_text("userId,movieId,rating,timestamp\n7,1,4.0,1700000000\n")
    with pytest.raises(ValueError, match=r"user_7\.csv: user_id 7 already exists.*made for "
                                         r"another release, ingest this one with "
                                         r"include_new_users: false"):
        _ingest(lake_resources, tiny_release)
    assert not (tmp_lake / "clean" / "ratings.parquet").exists()
    assert _ingest(lake_resources, tiny_release, include_new_users=False).success  # the way out


def test_half_stars_stored_for_another_release_name_it_and_the_way_out(tmp_path) -> None:
    folder = tmp_path / "new_users"
    folder.mkdir()
    (folder / "user_50.csv").write_text("userId,movieId,rating,timestamp\n50,1,3.5,1700000000\n")
    with pytest.raises(ValueError, match=r"rating 3.5 is not on the ml-1m scale"):
        read_new_users(new_user_files(tmp_path), WHOLE_STARS, pa.array([1, 2]), "ml-1m")


def test_malformed_new_user_file_names_file_and_line(tmp_path) -> None:
    folder = tmp_path / "new_users"
    folder.mkdir()
    (folder / "user_50.csv").write_text(
        "userId,movieId,rating,timestamp\n50,1,4.0,1700000000\n50,2,4.3,1700000000\n")
    (folder / ".user_51.csv.tmp").write_text("half-written")
    files = new_user_files(tmp_path)
    assert [p.name for p in files] == ["user_50.csv"]
    with pytest.raises(ValueError, match=r"user_50\.csv.*line 3") as caught:
        read_new_users(files, HALF_STARS, pa.array(np.arange(1, 10)))
    assert isinstance(caught.value, ReleaseMismatchError)  # 4.3 is off every scale
    (folder / "user_50.csv").write_text("userId,movieId,rating,timestamp\n50,1,four,1700000000\n")
    with pytest.raises(ValueError, match=r"user_50\.csv.*line 2") as caught:
        read_new_users(files, HALF_STARS, pa.array(np.arange(1, 10)))
    assert not isinstance(caught.value, ReleaseMismatchError)  # malformed: no release advice


def test_one_user_in_two_files_is_refused(tmp_path) -> None:
    folder = tmp_path / "new_users"
    folder.mkdir()
    for name in ("user_50.csv", "user_50_again.csv"):
        (folder / name).write_text("userId,movieId,rating,timestamp\n50,1,4.0,1700000000\n")
    with pytest.raises(ValueError, match=r"user_50_again\.csv: user_id 50 is also in"):
        read_new_users(new_user_files(tmp_path), HALF_STARS, pa.array([1, 2]))
