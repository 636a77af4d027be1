"""New-user ratings: parsing by id or title, one error per bad file naming its lines, storing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from recsys_pipeline import schema as S
from recsys_pipeline.data.lake import file_sha256
from recsys_pipeline.data.movielens import detect_release, read_table
from recsys_pipeline.serving.new_user import (
    NEW_USER_SCHEMA,
    max_user_id,
    overlapping_new_users,
    parse_new_user_ratings,
    persist_new_user,
)
from recsys_pipeline_tests.conftest import write_tiny_release
from recsys_pipeline_tests.serving.planted import ITEM_IDS, make_movies

MOVIES = make_movies()
GOOD_IDS = [int(i) for i in ITEM_IDS[10:30]]  # 20 movies, none of the tricky titles


def id_csv(tmp_path: Path, rows: list[str], header: str = "movieId,rating") -> Path:
    path = tmp_path / "mine.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def good_rows() -> list[str]:
    return [f"{i},{1 + (n % 9) / 2}" for n, i in enumerate(GOOD_IDS)]


def test_parse_by_movie_id(tmp_path: Path) -> None:
    table = parse_new_user_ratings(id_csv(tmp_path, good_rows()), MOVIES)
    assert table.schema == NEW_USER_SCHEMA
    assert table.column(S.ITEM_ID).to_pylist() == GOOD_IDS
    assert table.column("line").to_pylist() == list(range(2, 22))
    assert table.column(S.RATING).to_pylist()[:3] == [1.0, 1.5, 2.0]
    assert table.column(S.TITLE)[0].as_py() == "Film 10 (1960)"


def test_parse_by_title_case_and_year(tmp_path: Path) -> None:
    rows = [f"film {n},4" for n in range(10, 28)]  # no year, lower case
    rows += ['"HEAT, THE",3.5', "Alien (1986),5"]  # quoted comma; the year picks one Alien
    table = parse_new_user_ratings(id_csv(tmp_path, rows, "title,rating"), MOVIES)
    ids = table.column(S.ITEM_ID).to_pylist()
    assert ids[:18] == [int(i) for i in ITEM_IDS[10:28]]
    assert ids[18:] == [int(ITEM_IDS[5]), int(ITEM_IDS[4])]


def test_mapping_input_names_entries() -> None:
    mapping = {i: 3.0 for i in GOOD_IDS}
    assert parse_new_user_ratings(mapping, MOVIES).num_rows == 20
    with pytest.raises(ValueError, match=r"entry 21: title 'Alien' is ambiguous"):
        parse_new_user_ratings({**mapping, "Alien": 4.0}, MOVIES)


BAD_FILES = [
    # (rows replacing / added to the 20 good ones, header, expected message)
    ({3: "999999,4"}, "movieId,rating", r"line 5: movieId 999999 not in movies"),
    ({5: "12x,4"}, "movieId,rating", r"line 7: movieId '12x' is not an integer"),
    ({20: f"{GOOD_IDS[0]},2"}, "movieId,rating",
     r"line 22: movieId \d+ rated again \(first on line 2\)"),
    ({7: f"{GOOD_IDS[7]},5.5"}, "movieId,rating", r"line 9: rating 5.5 is off the scale"),
    ({8: f"{GOOD_IDS[8]},0.25"}, "movieId,rating", r"line 10: rating 0.25 is off the scale"),
    ({9: f"{GOOD_IDS[9]},0"}, "movieId,rating", r"line 11: rating 0 is off the scale"),
    ({10: f"{GOOD_IDS[10]},great"}, "movieId,rating", r"line 12: rating 'great' is not a number"),
    ({11: f"{GOOD_IDS[11]},4,extra"}, "movieId,rating", r"line 13: 3 fields, header has 2"),
    ({}, "movie,stars", r"line 1: header \['movie', 'stars'\]"),
]


@pytest.mark.parametrize(("changes", "header", "message"), BAD_FILES)
def test_bad_file_names_its_rows(tmp_path: Path, changes: dict[int, str], header: str,
                                 message: str) -> None:
    rows = good_rows()
    for index, row in changes.items():
        rows[index:index + 1] = [row]
    path = id_csv(tmp_path, rows, header)
    with pytest.raises(ValueError, match=message) as err:
        parse_new_user_ratings(path, MOVIES)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("row", "message"), [
    ("Film 999,4", r"line 21: title 'Film 999' not found"),
    ("alien,4", r"line 21: title 'alien' is ambiguous: 'Alien \(1979\)' \(movieId 40\), "
                r"'Alien \(1986\)' \(movieId 51\)"),
])
def test_bad_titles(tmp_path: Path, row: str, message: str) -> None:
    rows = [f"Film {n},4" for n in range(10, 29)] + [row]
    with pytest.raises(ValueError, match=message):
        parse_new_user_ratings(id_csv(tmp_path, rows, "title,rating"), MOVIES)


def test_all_bad_rows_reported_together(tmp_path: Path) -> None:
    rows = good_rows()
    rows[0], rows[4] = "1,4", f"{GOOD_IDS[4]},7"
    with pytest.raises(ValueError, match=r"2 bad row\(s\):\n  line 2: .*\n  line 6: "):
        parse_new_user_ratings(id_csv(tmp_path, rows), MOVIES)


def test_too_few_ratings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"19 rating\(s\) \(lines 2, 3, .*20\); at least 20"):
        parse_new_user_ratings(id_csv(tmp_path, good_rows()[:19]), MOVIES)
    with pytest.raises(ValueError, match=r"0 rating\(s\) \(lines none\); at least 1"):
        parse_new_user_ratings(id_csv(tmp_path, []), MOVIES, min_ratings=0)  # header only
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        parse_new_user_ratings(tmp_path / "nope.csv", MOVIES)


def test_a_timestamp_column_is_kept(tmp_path: Path, tmp_lake: Path) -> None:
    rows = [f"{row},{1_700_000_000 + 60 * n}" for n, row in enumerate(good_rows())]
    table = parse_new_user_ratings(id_csv(tmp_path, rows, "movieId,rating,timestamp"), MOVIES)
    assert table.column_names == [*NEW_USER_SCHEMA.names, S.TIMESTAMP]
    assert table.column(S.TIMESTAMP).type == pa.int64()
    assert table.column(S.TIMESTAMP).to_pylist() == [1_700_000_000 + 60 * n for n in range(20)]
    assert parse_new_user_ratings(id_csv(tmp_path, good_rows()), MOVIES).schema == \
        NEW_USER_SCHEMA  # no column, no timestamps

    rows[3] = rows[3].rsplit(",", 1)[0] + ",yesterday"
    rows[5] = rows[5].rsplit(",", 1)[0] + ",1.7e9"
    rows[7] = rows[7].rsplit(",", 1)[0] + ",1700000000000"  # milliseconds
    with pytest.raises(ValueError, match=r"3 bad row\(s\):\n  line 5: timestamp 'yesterday' "
                                         r"is not whole Unix seconds .*\n  line 7: timestamp .*"
                                         r"\n  line 9: timestamp 1700000000000 is outside "
                                         r"1995-01-01..now as Unix seconds \(milliseconds"):
        parse_new_user_ratings(id_csv(tmp_path, rows, "movieId,rating,timestamp"), MOVIES)


def test_the_release_scale_is_enforced(tmp_path: Path) -> None:
    rows = good_rows()  # 1.0, 1.5, 2.0, ... (half stars)
    whole = (1.0, 5.0, 1.0)  # ml-1m / ml-100k
    with pytest.raises(ValueError, match=r"line 3: rating 1.5 is off the scale 1..5 in steps "
                                         r"of 1\n"):
        parse_new_user_ratings(id_csv(tmp_path, rows), MOVIES, scale=whole)
    stars = [f"{i},{1 + n % 5}" for n, i in enumerate(GOOD_IDS)]
    table = parse_new_user_ratings(id_csv(tmp_path, stars), MOVIES, scale=whole)
    assert table.column(S.RATING).to_pylist()[:6] == [1, 2, 3, 4, 5, 1]
    assert parse_new_user_ratings(id_csv(tmp_path, rows), MOVIES).num_rows == 20  # half stars


def test_unreadable_sources_are_named(tmp_path: Path) -> None:
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("title,rating\nFilm 10 (1960),4\nAm\u00e9lie,5\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.csv: line 3: byte 0xe9 is not UTF-8; save the "
                                         "file as UTF-8"):
        parse_new_user_ratings(latin, MOVIES)
    with pytest.raises(ValueError, match=f"{tmp_path}: is a folder; give the new-user ratings"):
        parse_new_user_ratings(tmp_path, MOVIES)


def test_persist_new_user_writes_a_fresh_file(tmp_lake: Path) -> None:
    release = write_tiny_release(tmp_lake / "raw" / "tiny", n_users=30, n_items=40)
    shipped = {p.name: file_sha256(p) for p in release.iterdir()}
    movies = read_table(detect_release(release), "movies")
    ratings = parse_new_user_ratings({i: 0.5 + (i % 10) / 2 for i in range(1, 21)}, movies)

    first = persist_new_user(ratings, tmp_lake / "raw", timestamp=1_700_000_000)
    assert first.user_id == 31 and first.n_ratings == 20
    assert first.path == tmp_lake / "raw" / "new_users" / "user_31.csv"
    lines = first.path.read_text().splitlines()
    assert lines[0] == "userId,movieId,rating,timestamp"
    assert lines[1] == "31,1,1.0,1700000000" and len(lines) == 21
    read_back = pacsv.read_csv(first.path)
    assert read_back.column("movieId").to_pylist() == list(range(1, 21))

    other = parse_new_user_ratings({i: 5.0 for i in range(11, 31)}, movies)
    second = persist_new_user(other, tmp_lake / "raw", known_max_user_id=30)
    assert second.user_id == 32 and not second.stored_before  # above the stored new user too
    assert {p.name: file_sha256(p) for p in release.iterdir()} == shipped
    assert sorted(p.name for p in (tmp_lake / "raw" / "new_users").iterdir()) == [
        "user_31.csv", "user_32.csv"]  # no temp file left behind
    assert detect_release(tmp_lake / "raw").source == release  # still one release

    with pytest.raises(ValueError, match="user_id 32 is not fresh"):
        persist_new_user(other.slice(0, 19), tmp_lake / "raw", 32, known_max_user_id=30)
    third = other.slice(1, 19)
    assert persist_new_user(third, tmp_lake / "raw", 100, known_max_user_id=30).user_id == 100


def test_persisting_the_same_ratings_twice_stores_one_user(tmp_lake: Path) -> None:
    release = write_tiny_release(tmp_lake / "raw" / "tiny", n_users=30, n_items=40)
    movies = read_table(detect_release(release), "movies")
    ratings = parse_new_user_ratings({i: 0.5 + (i % 10) / 2 for i in range(1, 21)}, movies)
    first = persist_new_user(ratings, tmp_lake / "raw", timestamp=1_700_000_000)
    before = first.path.read_bytes()

    shuffled = ratings.take(np.arange(ratings.num_rows)[::-1].copy())  # order does not matter
    again = persist_new_user(shuffled, tmp_lake / "raw", timestamp=1_800_000_000)
    assert again == type(first)(31, first.path, 20, stored_before=True)
    assert first.path.read_bytes() == before  # untouched, timestamps included
    assert [p.name for p in (tmp_lake / "raw" / "new_users").iterdir()] == ["user_31.csv"]
    with pytest.raises(ValueError, match=r"already stored as user_id 31 .*user_31.csv.*not 40"):
        persist_new_user(ratings, tmp_lake / "raw", 40)

    changed = ratings.set_column(3, S.RATING, pa.array(
        np.r_[4.0, ratings.column(S.RATING).to_numpy()[1:]].astype(np.float32)))
    assert persist_new_user(changed, tmp_lake / "raw").user_id == 32  # one rating differs


def test_overlapping_new_users_are_found(tmp_lake: Path) -> None:
    release = write_tiny_release(tmp_lake / "raw" / "tiny", n_users=30, n_items=40)
    movies = read_table(detect_release(release), "movies")
    raw = tmp_lake / "raw"
    first = persist_new_user(parse_new_user_ratings({i: 4.0 for i in range(1, 21)}, movies),
                             raw, timestamp=1)
    other = persist_new_user(parse_new_user_ratings({i: 2.0 for i in range(21, 41)}, movies),
                             raw, timestamp=1)
    changed = parse_new_user_ratings({**{i: 4.0 for i in range(1, 20)}, 20: 1.0}, movies)
    assert overlapping_new_users(raw, changed) == [(first.user_id, first.path, 20)]
    fewer = parse_new_user_ratings({i: 4.0 for i in range(1, 16)}, movies, min_ratings=1)
    assert overlapping_new_users(raw, fewer) == [(first.user_id, first.path, 15)]
    mixed = parse_new_user_ratings({i: 3.0 for i in range(11, 31)}, movies)  # 10 + 10
    assert overlapping_new_users(raw, mixed) == []
    assert overlapping_new_users(raw, mixed, min_share=0.5) == [
        (first.user_id, first.path, 10), (other.user_id, other.path, 10)]


def test_new_ids_are_fresh_in_the_ingested_release_too(tmp_lake: Path, tmp_path: Path) -> None:
    """A release ingested from elsewhere (a downloaded zip, a --path folder) counts, not only
    the folder detected under raw/."""
    import json

    raw = tmp_lake / "raw"
    write_tiny_release(raw / "tiny", n_users=30, n_items=40)
    bigger = write_tiny_release(tmp_path / "ml-other", n_users=70, n_items=40)
    assert max_user_id(raw) == 30  # nothing ingested yet: the folder under raw/
    (raw / "movielens_release.json").write_text(json.dumps(
        {"source": str(bigger), "name": "ml-latest-small"}))
    assert max_user_id(raw) == 70
    movies = read_table(detect_release(bigger), "movies")
    ratings = parse_new_user_ratings({i: 4.0 for i in range(1, 21)}, movies)
    assert persist_new_user(ratings, raw, timestamp=1).user_id == 71

    (raw / "movielens_release.json").write_text(json.dumps(
        {"source": str(tmp_path / "gone"), "name": "ml-latest-small"}))
    assert max_user_id(raw) == 71  # a recorded release that is gone: the folder and stored


def test_persist_rejects_off_scale_ratings(tmp_lake: Path) -> None:
    table = parse_new_user_ratings({int(i): 3.0 for i in GOOD_IDS}, MOVIES)
    bad = table.set_column(3, S.RATING, pa.array(np.full(20, 3.3, np.float32)))
    with pytest.raises(ValueError, match="off the half-star scale"):
        persist_new_user(bad, tmp_lake / "raw", known_max_user_id=5)
    assert not (tmp_lake / "raw" / "new_users").exists() or not any(
        (tmp_lake / "raw" / "new_users").iterdir())
