"""Tests of the MovieLens reader: every layout, folder and zip, detection, bad input, real data."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

from recsys_pipeline import schema
from recsys_pipeline.data import _textio
from recsys_pipeline.data.movielens import (
    HALF_STARS,
    OFFICIAL_RELEASES,
    WHOLE_STARS,
    RatingScale,
    detect_release,
    read_table,
)
from recsys_pipeline_tests.conftest import EMBEDDED
from recsys_pipeline_tests.data.releases import KINDS, tiny_release, write_release, zip_release

RATINGS_CSV = "userId,movieId,rating,timestamp\n"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def movie(item_id: int, title: str, year: int | None, genres: list[str]) -> dict:
    return {"item_id": item_id, "title": title, "year": year, "genres": genres}


def tag(user_id: int, item_id: int, text: str, when: datetime | None) -> dict:
    return {"user_id": user_id, "item_id": item_id, "tag": text, "timestamp": when}


def write(folder: Path, files: dict[str, bytes | str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def rows(release_or_path, table: str) -> list[dict]:
    release = release_or_path
    if not hasattr(release, "layout"):
        release = detect_release(release_or_path)
    result = read_table(release, table)
    assert result.schema.equals(schema.TABLE_SCHEMAS[table])
    return result.to_pylist()


# --- rating scales ----------------------------------------------------------------------------


def test_rating_scales_list_allowed_values() -> None:
    assert HALF_STARS.allowed_values() == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert WHOLE_STARS.allowed_values() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert RatingScale(1.0, 2.0, 0.25).allowed_values() == [1.0, 1.25, 1.5, 1.75, 2.0]


# --- hand-written files of every layout, exact values --------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_csv_layout_exact_rows(tmp_path: Path, eol: str) -> None:
    folder = write(
        tmp_path / "ml-latest-small",
        {
            "ratings.csv": (
                RATINGS_CSV + "1,1,4.0,964982703\n1,3,0.5,964982224\n7,3,5.0,1537799250\n"
            ).replace("\n", eol),
            "movies.csv": (
                "movieId,title,genres\n"
                "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
                '11,"American President, The (1995)",Comedy|Drama|Romance\n'
                "40697,Babylon 5,Sci-Fi\n"
                "96 ,96 Minutes (2011) ,Drama|Thriller\n"
                "143410,Hyena Road,(no genres listed)\n"
                "171749,Death Note: Desu nôto (2006–2007),(no genres listed)\n"
            ).replace("\n", eol),
            "tags.csv": (
                'userId,movieId,tag,timestamp\n2,60756,"dark, ""moody""",1445714994\n'
                "2,60756,funny,\n"
            ).replace("\n", eol),
            # 8844.0: an id column re-saved by pandas (floats, for the gaps) still reads
            "links.csv": "movieId,imdbId,tmdbId\n1,0114709,862\n791,0113610,\n2,0113497,8844.0\n"
            .replace("\n", eol),
        },
    )
    release = detect_release(folder)
    assert (release.name, release.layout, release.member_prefix) == ("ml-latest-small", "csv", "")
    assert release.source == folder and release.rating_scale == HALF_STARS
    assert rows(release, "ratings") == [
        {"user_id": 1, "item_id": 1, "rating": 4.0, "timestamp": utc(2000, 7, 30, 18, 45, 3)},
        {"user_id": 1, "item_id": 3, "rating": 0.5, "timestamp": utc(2000, 7, 30, 18, 37, 4)},
        {"user_id": 7, "item_id": 3, "rating": 5.0, "timestamp": utc(2018, 9, 24, 14, 27, 30)},
    ]
    assert rows(release, "movies") == [
        movie(
            1, "Toy Story (1995)", 1995, ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
        ),
        movie(11, "American President, The (1995)", 1995, ["Comedy", "Drama", "Romance"]),
        movie(40697, "Babylon 5", None, ["Sci-Fi"]),
        movie(96, "96 Minutes (2011)", 2011, ["Drama", "Thriller"]),
        movie(143410, "Hyena Road", None, []),
        movie(171749, "Death Note: Desu nôto (2006–2007)", 2006, []),
    ]
    assert rows(release, "tags") == [
        tag(2, 60756, 'dark, "moody"', utc(2015, 10, 24, 19, 29, 54)),
        tag(2, 60756, "funny", None),
    ]
    assert rows(release, "links") == [
        {"item_id": 1, "imdb_id": "0114709", "tmdb_id": 862},
        {"item_id": 791, "imdb_id": "0113610", "tmdb_id": None},
        {"item_id": 2, "imdb_id": "0113497", "tmdb_id": 8844},
    ]
    assert json.loads(json.dumps(release.describe())) == {
        "name": "ml-latest-small",
        "layout": "csv",
        "source": str(folder),
        "member_prefix": "",
        "files": {
            "ratings": "ratings.csv",
            "movies": "movies.csv",
            "tags": "tags.csv",
            "links": "links.csv",
        },
        "rating_scale": {"min": 0.5, "max": 5.0, "step": 0.5},
    }


def test_csv_keeps_duplicates_and_empty_numeric_fields_as_nulls(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "ml-latest",
        {"ratings.csv": RATINGS_CSV + "1,2,3.5,964982705\n1,2,3.5,964982705\n"
                        "1,,4.0,964982706\n2,3,,964982707\n"},
    )
    got = rows(folder, "ratings")
    assert [(r["user_id"], r["item_id"], r["rating"]) for r in got] == [
        (1, 2, 3.5),
        (1, 2, 3.5),
        (1, None, 4.0),
        (2, 3, None),
    ]


def test_csv_columns_in_any_order_and_header_only_tables(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "ml-latest",
        {
            "ratings.csv": 'timestamp,rating,note,movieId,userId\n964982703,4.5,"a, b",10,3\n',
            "movies.csv": "movieId,title,genres\r\n",
            "tags.csv": "userId,movieId,tag,timestamp\n",
        },
    )
    assert rows(folder, "ratings") == [
        {"user_id": 3, "item_id": 10, "rating": 4.5, "timestamp": utc(2000, 7, 30, 18, 45, 3)}
    ]
    assert rows(folder, "movies") == [] and rows(folder, "tags") == []


def test_renamed_ml20m_parses_datetime_strings_as_utc(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "ml-20m",
        {
            "rating.csv": RATINGS_CSV
            + "1,2,3.5,2005-04-02 23:53:47\n1,29,3.5,2005-04-02 23:31:16\n",
            "movie.csv": "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n",
            "tag.csv": "userId,movieId,tag,timestamp\n18,4141,Mark Waters,2009-04-24 18:19:40\n",
            "link.csv": "movieId,imdbId,tmdbId\n1,0114709,862\n",
        },
    )
    release = detect_release(folder)
    assert (release.name, release.layout) == ("ml-20m", "csv-renamed")
    assert release.files == {
        "ratings": "rating.csv",
        "movies": "movie.csv",
        "tags": "tag.csv",
        "links": "link.csv",
    }
    assert rows(release, "ratings") == [
        {"user_id": 1, "item_id": 2, "rating": 3.5, "timestamp": utc(2005, 4, 2, 23, 53, 47)},
        {"user_id": 1, "item_id": 29, "rating": 3.5, "timestamp": utc(2005, 4, 2, 23, 31, 16)},
    ]
    assert rows(release, "tags")[0]["timestamp"] == utc(2009, 4, 24, 18, 19, 40)
    assert rows(release, "movies")[0]["genres"] == ["Adventure", "Animation"]


def test_ml1m_dat_latin1_titles_and_occupations(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "ml-1m",
        {
            "ratings.dat": "1::1193::5::978300760\n1::661::3::978302109\n",
            "movies.dat": "1::Toy Story (1995)::Animation|Children's|Comedy\n"
            "73::Misérables, Les (1995)::Drama|Musical\n"
            "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure\n".encode("latin-1"),
            "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::0::55117\n"
            "4::M::45::20::02460\n",
        },
    )
    release = detect_release(folder)
    assert (release.name, release.layout, release.rating_scale) == ("ml-1m", "dat", WHOLE_STARS)
    assert rows(release, "ratings") == [
        {"user_id": 1, "item_id": 1193, "rating": 5.0, "timestamp": utc(2000, 12, 31, 22, 12, 40)},
        {"user_id": 1, "item_id": 661, "rating": 3.0, "timestamp": utc(2000, 12, 31, 22, 35, 9)},
    ]
    movies = rows(release, "movies")
    assert movies[1] == movie(73, "Misérables, Les (1995)", 1995, ["Drama", "Musical"])
    assert movies[2]["title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert movies[0]["genres"] == ["Animation", "Children's", "Comedy"]
    assert rows(release, "users") == [
        {"user_id": 1, "gender": "F", "age": 1, "occupation": "K-12 student", "zip_code": "48067"},
        {
            "user_id": 2,
            "gender": "M",
            "age": 56,
            "occupation": "self-employed",
            "zip_code": "70072",
        },
        {"user_id": 3, "gender": "M", "age": 25, "occupation": "other", "zip_code": "55117"},
        {"user_id": 4, "gender": "M", "age": 45, "occupation": "writer", "zip_code": "02460"},
    ]


def test_ml10m_dat_half_stars_and_tags_containing_separators(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "ml-10M100K",
        {
            "ratings.dat": "1::122::5::838985046\n1::185::4.5::838983525\n",
            "movies.dat": "1::Toy Story (1995)::Adventure|Animation\n"
            "8606::Pull My Daisy (1958)::(no genres listed)\n",
            "tags.dat": "15::4973::excellent!::1215184630\n"
            "20::1747::politics: satire::1188263867\n"
            "25::50::sci-fi::classic:: (re)watch::1166101426\n"
            "31::2::café::1200000000\n",
        },
    )
    release = detect_release(folder)
    assert (release.name, release.layout, release.rating_scale) == ("ml-10m", "dat", HALF_STARS)
    assert "users" not in release.files
    assert [r["rating"] for r in rows(release, "ratings")] == [5.0, 4.5]
    assert rows(release, "movies")[1] == movie(8606, "Pull My Daisy (1958)", 1958, [])
    assert rows(release, "tags") == [
        tag(15, 4973, "excellent!", utc(2008, 7, 4, 15, 17, 10)),
        tag(20, 1747, "politics: satire", utc(2007, 8, 28, 1, 17, 47)),
        tag(25, 50, "sci-fi::classic:: (re)watch", utc(2006, 12, 14, 13, 3, 46)),
        tag(31, 2, "café", utc(2008, 1, 10, 21, 20)),
    ]


def test_ml100k_tab_and_pipe_files_with_genre_flags(tmp_path: Path) -> None:
    def flags(*on: int) -> str:
        return "|".join("1" if i in on else "0" for i in range(19))

    url = "http://us.imdb.com/M/title-exact?x"
    folder = write(
        tmp_path / "ml-100k",
        {
            "u.data": "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
            "u.item": (
                f"1|Toy Story (1995)|01-Jan-1995||{url}|{flags(3, 4, 5)}\n"
                f"267|unknown||||{flags(0)}\n"
                f"1300|'Til There Was You|01-Jan-1997||{url}|{flags(8, 14)}\n"
                f"1309|Misérables, Les (1995)|01-Jan-1995||{url}|{flags(8)}\n"
            ).encode("latin-1"),
            "u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
        },
    )
    release = detect_release(folder)
    assert (release.name, release.layout, release.rating_scale) == ("ml-100k", "100k", WHOLE_STARS)
    assert release.files == {"ratings": "u.data", "movies": "u.item", "users": "u.user"}
    assert rows(release, "ratings") == [
        {"user_id": 196, "item_id": 242, "rating": 3.0, "timestamp": utc(1997, 12, 4, 15, 55, 49)},
        {"user_id": 186, "item_id": 302, "rating": 3.0, "timestamp": utc(1998, 4, 4, 19, 22, 22)},
    ]
    assert rows(release, "movies") == [
        movie(1, "Toy Story (1995)", 1995, ["Animation", "Children's", "Comedy"]),
        movie(267, "unknown", None, []),
        movie(1300, "'Til There Was You", 1997, ["Drama", "Romance"]),
        movie(1309, "Misérables, Les (1995)", 1995, ["Drama"]),
    ]
    assert rows(release, "users") == [
        {"user_id": 1, "gender": "M", "age": 24, "occupation": "technician", "zip_code": "85711"},
        {"user_id": 2, "gender": "F", "age": 53, "occupation": "other", "zip_code": "94043"},
    ]


# --- generated tiny releases, folder and zip ------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("form", ["folder", "zip"])
def test_tiny_release_round_trip(tmp_path: Path, kind: str, form: str) -> None:
    folder = write_release(tmp_path, kind, n_users=5, n_items=9, per_user=4)
    path = zip_release(folder) if form == "zip" else folder
    release = detect_release(path)
    expected = tiny_release(kind, n_users=5, n_items=9, per_user=4)
    assert (release.name, release.layout) == (expected.name, expected.layout)
    assert release.source == path
    assert release.member_prefix == (f"{folder.name}/" if form == "zip" else "")
    assert set(release.files) == set(expected.tables)
    for table, expected_rows in expected.tables.items():
        assert rows(release, table) == expected_rows, table


def test_line_numbers_stay_right_across_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(_textio, "CHUNK_BYTES", 64)  # many chunks, lines split across them
    lines = [f"{u},{u + 1},{(u % 10 + 1) / 2},{964982703 + u}\n" for u in range(1, 200)]
    lines[150] = "151,152,9.5,964982854\n"  # line 152 (header is line 1)
    lines[180] = "181,182,8.0,964982884\n"
    folder = write(tmp_path / "ml-latest", {"ratings.csv": RATINGS_CSV + "\n" + "".join(lines)})
    with pytest.raises(ValueError, match=r"line 153, column 'rating': rating 9.5 .* 2 of 199"):
        read_table(detect_release(folder), "ratings")  # the blank line 2 counts too


@pytest.mark.parametrize(
    ("name", "files", "message"),
    [
        # one timestamp in milliseconds: 1000x too large (was an OverflowError much later)
        ("ml-latest", {"ratings.csv": RATINGS_CSV + "1,1,4.0,964982703\n1,2,3.0,964982703000\n"},
         r"ratings.csv, line 3, column 'timestamp': timestamp 964982703000 is outside "
         r"1995-01-01..now as Unix seconds \(milliseconds\?.*1 of 2 rows"),
        # a plausible-looking 1970 date, before MovieLens existed
        ("ml-1m", {"ratings.dat": "1::2::3::964982703\n1::3::4::86400\n"},
         r"ratings.dat, line 2, column 'Timestamp': timestamp 86400 is outside"),
        ("ml-latest", {"tags.csv": "userId,movieId,tag,timestamp\n1,2,x,-5\n"},
         r"tags.csv, line 2, column 'timestamp': timestamp -5 is outside"),
    ],
)
def test_timestamps_outside_movielens_time_are_refused_with_their_line(
    tmp_path: Path, name: str, files: dict[str, str], message: str
) -> None:
    folder = write(write_release(tmp_path, name), files)
    table = "tags" if "tags.csv" in files else "ratings"
    with pytest.raises(ValueError, match=message):
        read_table(detect_release(folder), table)


# --- detection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "folder_name", "expected"),
    [
        ("csv", "my-movielens", "ml-latest"),
        ("csv-renamed", "kaggle", "ml-20m"),
        ("ml-1m", "dat-with-users", "ml-1m"),
        ("ml-10m", "dat-without-users", "ml-10m"),
        ("ml-100k", "hundred", "ml-100k"),
        ("ml-10m", "ml-10M100K", "ml-10m"),
        ("ml-25m", "ml-25m", "ml-25m"),
        ("csv", "ml-1m", "ml-latest"),  # an official name that does not fit the files
    ],
)
def test_detect_name_by_folder_or_layout(
    tmp_path: Path, kind: str, folder_name: str, expected: str
) -> None:
    folder = write_release(tmp_path, kind, folder_name=folder_name)
    assert detect_release(folder).name == expected
    assert detect_release(tmp_path).source == folder  # a folder holding one release folder


def test_detect_zip_by_top_folder_and_with_files_at_root(tmp_path: Path) -> None:
    zipped = zip_release(write_release(tmp_path, "ml-10m"), tmp_path / "download.zip")
    release = detect_release(zipped)
    assert (release.name, release.member_prefix, release.source) == (
        "ml-10m",
        "ml-10M100K/",
        zipped,
    )

    flat = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(flat, "w") as archive:
        archive.writestr("ratings.dat", "1::2::3::964982703\n")
    assert (detect_release(flat).name, detect_release(flat).member_prefix) == ("ml-1m", "")
    assert rows(flat, "ratings") == [
        {"user_id": 1, "item_id": 2, "rating": 3.0, "timestamp": utc(2000, 7, 30, 18, 45, 3)}
    ]


@pytest.mark.parametrize(
    ("kind", "name"),
    [("csv", "ml-25m"), ("csv-renamed", "ml-20m"), ("ml-1m", "ml-10m"), ("ml-100k", "ML-100K")],
)
def test_explicit_name_overrides(tmp_path: Path, kind: str, name: str) -> None:
    release = detect_release(write_release(tmp_path, kind, folder_name="x"), name=name)
    assert release.name == name.lower()
    assert release.rating_scale == (WHOLE_STARS if name.lower() == "ml-100k" else HALF_STARS)


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        (
            "csv",
            "ml-1m",
            r"'ml-1m' does not fit .*'csv' layout \(ratings.csv\).*ml-1m has the 'dat'",
        ),
        ("ml-1m", "ml-100k", r"'ml-100k' does not fit .*'dat' layout.*ml-1m, ml-10m"),
        ("csv-renamed", "ml-25m", r"'csv-renamed' layout"),
        ("csv", "ml-2m", r"'ml-2m' is not an official MovieLens release name"),
    ],
)
def test_explicit_name_mismatch_is_an_error(
    tmp_path: Path, kind: str, name: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        detect_release(write_release(tmp_path, kind), name=name)


def test_official_releases_listed() -> None:
    assert set(OFFICIAL_RELEASES) == {
        "ml-latest-small",
        "ml-latest",
        "ml-100k",
        "ml-1m",
        "ml-10m",
        "ml-20m",
        "ml-25m",
        "ml-32m",
    }


def test_unknown_layout_names_path_and_files(tmp_path: Path) -> None:
    folder = write(tmp_path / "stuff", {"scores.csv": "a,b\n", "README.txt": "hi"})
    with pytest.raises(
        ValueError,
        match=r"stuff holds no MovieLens.*'README.txt', 'scores.csv'"
        r".*csv \(ratings.csv.*100k \(u.data",
    ):
        detect_release(folder)


def test_detect_errors_for_missing_path_and_several_releases(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        detect_release(tmp_path / "nowhere")
    write_release(tmp_path, "ml-1m")
    write_release(tmp_path, "csv")
    with pytest.raises(ValueError, match="several release folders.*ml-1m"):
        detect_release(tmp_path)


def test_missing_table_names_the_tables_the_release_has(tmp_path: Path) -> None:
    release = detect_release(write_release(tmp_path, "ml-100k"))
    with pytest.raises(KeyError, match="no 'tags' table; it has: ratings, movies, users"):
        read_table(release, "tags")
    with pytest.raises(ValueError, match="unknown table 'rating'"):
        read_table(release, "rating")


def test_truncated_and_corrupt_zips_are_named(tmp_path: Path) -> None:
    zipped = zip_release(write_release(tmp_path, "ml-1m", n_users=300, n_items=60, per_user=30))
    data = zipped.read_bytes()
    truncated = tmp_path / "cut" / "ml-1m.zip"
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut/ml-1m.zip is not a readable zip file"):
        detect_release(truncated)

    with zipfile.ZipFile(zipped) as archive:
        start = archive.getinfo("ml-1m/ratings.dat").header_offset + 100
    corrupt = bytearray(data)
    corrupt[start : start + 50] = bytes(b ^ 0xFF for b in corrupt[start : start + 50])
    zipped.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=r"ml-1m.zip member ml-1m/ratings.dat: the zip is corrupt"):
        read_table(detect_release(zipped), "ratings")


# --- bad input: each case names the file and the line and/or column ----------------------------

H = RATINGS_CSV
# (case, kind, file, table, content, expected message pattern)
# fmt: off
BAD_INPUT = [
    ("missing column", "csv", "ratings.csv", "ratings", "userId,movieId,timestamp\n1,2,3\n",
     r"ratings.csv, line 1: the header lacks column\(s\) 'rating'"),
    ("non-numeric rating", "csv", "ratings.csv", "ratings",
     H + "1,1,4.0,1\n1,2,4.0,1\n1,3,4.0,1\n1,4,abc,1\n",
     r"ratings.csv, line 5, column 'rating': cannot parse 'abc' as a number"),
    ("out of range", "csv", "ratings.csv", "ratings",
     H + "1,1,4.0,1\n1,2,7.0,1\n1,3,3.0,1\n1,4,0.0,1\n",
     r"ratings.csv, line 3, column 'rating': rating 7.0 is not on the "
     r"ml-latest-small scale \(0.5 to 5 in steps of 0.5\); 2 of 4 rows"),
    ("off the half-star scale", "csv", "ratings.csv", "ratings", H + "1,1,4.0,1\n1,3,3.3,1\n",
     r"ratings.csv, line 3, column 'rating': rating 3.3 is not.*1 of 2 rows"),
    ("half star in ml-1m", "ml-1m", "ratings.dat", "ratings",
     "1::1::4::978300760\n1::2::2.5::978300760\n",
     r"ratings.dat, line 2, column 'Rating': rating 2.5 .*ml-1m"),
    ("wrong separator", "csv", "ratings.csv", "ratings", H.replace(",", ";") + "1;1;4.0;1\n",
     r"ratings.csv, line 1: the header .* looks like it uses ';' as separator"),
    ("wrong separator in a row", "csv", "ratings.csv", "ratings", H + "1,1,4.0,1\n1;2;4.0;1\n",
     r"ratings.csv, line 3: expected 4 fields .* by ',', found 1"),
    ("extra field", "csv", "movies.csv", "movies",
     'movieId,title,genres\n1,"A, B (1995)",Drama\n2,"C, ""D""",Drama,x\n',
     r"movies.csv, line 3: expected 3 fields .* found 4"),
    ("empty file", "csv", "ratings.csv", "ratings", "", r"ratings.csv is empty \(0 bytes\)"),
    ("empty dat file", "ml-1m", "movies.dat", "movies", "", r"movies.dat is empty \(0 bytes\)"),
    ("header only", "csv", "ratings.csv", "ratings", H, r"ratings.csv holds no ratings"),
    ("invalid utf-8", "csv", "tags.csv", "tags",
     b"userId,movieId,tag,timestamp\r\n1,1,ok,1\r\n1,1,b\xffd,1\r\n",
     r"tags.csv, line 3: bytes b'\\xff' are not valid utf-8"),
    ("invalid utf-8 in a number", "csv", "ratings.csv", "ratings", H.encode() + b"1,1,4.0,\xff\n",
     r"ratings.csv, line 2: bytes b'\\xff' are not valid utf-8"),
    ("invalid utf-8 in ml-1m ratings", "ml-1m", "ratings.dat", "ratings",
     b"1::1::4::978300760\n1::\xe92::4::978300760\n", r"ratings.dat, line 2"),
    ("id overflow", "csv", "links.csv", "links", "movieId,imdbId,tmdbId\n1,0114709,99999999999\n",
     r"links.csv, line 2, column 'tmdbId': cannot parse '99999999999' as an integer"),
    ("fractional tmdbId", "csv", "links.csv", "links",
     "movieId,imdbId,tmdbId\n1,0114709,862.0\n\n2,0113497,8844.5\n",
     r"links.csv, line 4, column 'tmdbId': cannot parse '8844.5' as an integer"),
    ("word tmdbId", "csv", "links.csv", "links", "movieId,imdbId,tmdbId\n1,0114709,none\n",
     r"links.csv, line 2, column 'tmdbId': cannot parse 'none' as an integer"),
    ("bad date-time", "csv-renamed", "rating.csv", "ratings",
     H + "1,1,4.0,2015-03-31 23:40:02\n1,1,4.0,soon\n",
     r"rating.csv, line 3, column 'timestamp': cannot parse 'soon'"),
    ("impossible date-time", "csv-renamed", "rating.csv", "ratings",
     H + "1,1,4.0,2015-03-31 23:40:02\n\n1,1,4.0,2015-13-45 23:40:02\n",
     r"rating.csv, line 4, column 'timestamp': cannot parse '2015-13-45 23:40:02'"),
    ("dat too few fields", "ml-1m", "ratings.dat", "ratings",
     "1::1::4::978300760\n1::2::978300760\n",
     r"ratings.dat, line 2: expected 4 fields .* by '::', found 3"),
    ("dat bad id", "ml-1m", "movies.dat", "movies", "1::A (1995)::Drama\n\nx::B::Drama\n",
     r"movies.dat, line 3, column 'MovieID': cannot parse 'x' as an integer"),
    ("dat tag without timestamp", "ml-10m", "tags.dat", "tags", "1::2::ok::1\n1::2::bad\n",
     r"tags.dat, line 2: expected at least 4 fields"),
    ("bad occupation", "ml-1m", "users.dat", "users", "1::F::1::10::48067\n2::M::56::25::70072\n",
     r"users.dat, line 2, column 'Occupation': code 25 is not one"),
    ("100k bad rating", "ml-100k", "u.data", "ratings", "1\t2\t3\t4\n1\t2\tx\t4\n",
     r"u.data, line 2, column 'rating': cannot parse 'x' as a number"),
    ("100k bad genre flag", "ml-100k", "u.item", "movies",
     "1|A (1995)|01-Jan-1995||u|" + "0|" * 18 + "2\n",
     r"u.item, line 1, column 'Western': genre flags must be 0 or 1"),
]
# fmt: on


@pytest.mark.parametrize(
    ("kind", "file_name", "table", "content", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
@pytest.mark.parametrize("form", ["folder", "zip"])
def test_bad_input_names_file_line_and_column(
    tmp_path: Path, form: str, kind: str, file_name: str, table: str, content, message: str
) -> None:
    folder = write(write_release(tmp_path, kind), {file_name: content})
    release = detect_release(zip_release(folder) if form == "zip" else folder)
    member = f"{folder.name}.zip member {folder.name}/" if form == "zip" else f"{folder.name}/"
    with pytest.raises(ValueError, match=message) as caught:
        read_table(release, table)
    assert member + file_name in str(caught.value)
    left = {folder, folder.with_name(folder.name + ".zip")} if form == "zip" else {folder}
    assert set(tmp_path.iterdir()) == left  # nothing extracted or written beside the release


# --- the embedded ml-latest-small -------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded():
    if not (EMBEDDED / "ratings.csv").is_file():
        pytest.skip(f"embedded release missing at {EMBEDDED}")
    return detect_release(EMBEDDED)


def test_embedded_ratings(embedded) -> None:
    assert (embedded.name, embedded.layout, embedded.source) == ("ml-latest-small", "csv", EMBEDDED)
    ratings = read_table(embedded, "ratings")
    assert ratings.schema.equals(schema.RATINGS_SCHEMA)
    assert ratings.num_rows == 100_836
    assert pc.count_distinct(ratings["user_id"]).as_py() == 610
    assert pc.count_distinct(ratings["item_id"]).as_py() == 9_724
    assert ratings.slice(0, 1).to_pylist() == [
        {"user_id": 1, "item_id": 1, "rating": 4.0, "timestamp": utc(2000, 7, 30, 18, 45, 3)}
    ]
    assert pc.min_max(ratings["timestamp"]).as_py() == {
        "min": utc(1996, 3, 29, 18, 36, 55),
        "max": utc(2018, 9, 24, 14, 27, 30),
    }
    assert sum(ratings.null_count for ratings in ratings.columns) == 0


def test_embedded_movies_tags_links(embedded) -> None:
    movies = read_table(embedded, "movies")
    assert movies.num_rows == 9_742
    assert movies.slice(0, 1).to_pylist() == [
        movie(
            1, "Toy Story (1995)", 1995, ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
        )
    ]
    by_id = {m["item_id"]: m for m in movies.to_pylist()}
    assert by_id[40697] == movie(40697, "Babylon 5", None, ["Sci-Fi"])
    assert by_id[143410]["genres"] == []  # Hyena Road, (no genres listed)
    assert by_id[27008]["title"] == "From Dusk Till Dawn 2: Texas Blood Money (1999)"  # stripped
    assert by_id[171749]["year"] == 2006  # 'Death Note: Desu nôto (2006–2007)'
    assert movies["year"].null_count == 12
    tags = read_table(embedded, "tags")
    assert tags.num_rows == 3_683
    assert tags.slice(0, 1).to_pylist()[0]["tag"] == "funny"
    links = read_table(embedded, "links")
    assert links.num_rows == 9_742
    assert links["tmdb_id"].null_count == 8
    assert links.slice(0, 1).to_pylist() == [{"item_id": 1, "imdb_id": "0114709", "tmdb_id": 862}]


def test_ml10m_free_text_is_utf8_with_latin1_fallback(tmp_path: Path) -> None:
    # ml-10m is "UTF-8-ish": a stray Latin-1 byte is read as its Latin-1 character, and
    # real UTF-8 beside it is kept, instead of failing the whole release
    folder = write(write_release(tmp_path, "ml-10m"),
                   {"tags.dat": "1::2::caf\u00e9 \u2014 ok::964982703\n".encode()
                    + b"1::3::b\xe9d::964982704\n"})
    tags = read_table(detect_release(folder), "tags")
    assert tags.column("tag").to_pylist() == ["caf\u00e9 \u2014 ok", "b\u00e9d"]
