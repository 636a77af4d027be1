"""Tests of download_release on file:// URLs and a closed loopback port (never the internet)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from recsys_pipeline.data.download import DownloadError, download_release
from recsys_pipeline.data.movielens import detect_release, read_table
from recsys_pipeline_tests.data.releases import write_release, zip_release


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Path:
    """A folder laid out like files.grouplens.org: ml-latest-small.zip and its .md5."""
    folder = tmp_path / "server"
    folder.mkdir()
    release = write_release(tmp_path / "build", "ml-latest-small")
    zipped = zip_release(release, folder / "ml-latest-small.zip")
    (folder / "ml-latest-small.zip.md5").write_text(
        f"MD5 (ml-latest-small.zip) = {md5(zipped.read_bytes())}\n"
    )
    return folder


def test_download_verifies_and_returns_the_zip(tmp_path: Path, server: Path) -> None:
    dest = tmp_path / "lake" / "raw"
    path = download_release("ml-latest-small", dest, base_url=server.as_uri())
    assert path == dest / "ml-latest-small.zip"
    assert path.read_bytes() == (server / "ml-latest-small.zip").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == [
        "ml-latest-small.zip",
        "ml-latest-small.zip.md5",
    ]
    release = detect_release(path)
    assert (release.name, release.member_prefix) == ("ml-latest-small", "ml-latest-small/")
    assert read_table(release, "ratings").num_rows == 12


def test_cached_zip_is_returned_without_the_network(tmp_path: Path, server: Path) -> None:
    dest = tmp_path / "raw"
    first = download_release("ml-latest-small", dest, base_url=server.as_uri())
    mtime = first.stat().st_mtime_ns
    # the source is gone and the network unreachable: only the verified cache can answer
    again = download_release("ml-latest-small", dest, base_url="http://127.0.0.1:9", timeout=2)
    assert again == first and again.stat().st_mtime_ns == mtime


def test_existing_zip_matching_the_published_md5_is_not_downloaded(
    tmp_path: Path, server: Path
) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    good = (server / "ml-latest-small.zip").read_bytes()
    (dest / "ml-latest-small.zip").write_bytes(good)
    (server / "ml-latest-small.zip").write_bytes(b"not what was published")
    path = download_release("ml-latest-small", dest, base_url=server.as_uri())
    assert path.read_bytes() == good
    assert (dest / "ml-latest-small.zip.md5").read_text().endswith(md5(good) + "\n")


def test_stale_cache_is_downloaded_again(tmp_path: Path, server: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "ml-latest-small.zip").write_bytes(b"half a download")
    (dest / "ml-latest-small.zip.md5").write_text("0" * 32)
    path = download_release("ml-latest-small", dest, base_url=server.as_uri())
    assert path.read_bytes() == (server / "ml-latest-small.zip").read_bytes()


def test_checksum_mismatch_names_both_hashes_and_leaves_nothing(
    tmp_path: Path, server: Path
) -> None:
    actual = md5((server / "ml-latest-small.zip").read_bytes())
    (server / "ml-latest-small.zip.md5").write_text("0123456789abcdef0123456789abcdef  x.zip\n")
    dest = tmp_path / "raw"
    with pytest.raises(
        ValueError, match=f"expected 0123456789abcdef0123456789abcdef .*got {actual}"
    ):
        download_release("ml-latest-small", dest, base_url=server.as_uri())
    assert list(dest.iterdir()) == []


def test_offline_error_says_what_to_do(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    with pytest.raises(DownloadError) as caught:
        download_release("ml-1m", dest, base_url="http://127.0.0.1:9", timeout=2)
    message = str(caught.value)
    assert message.startswith("could not download http://127.0.0.1:9/ml-1m.zip.md5: ")
    assert "you appear to be offline" in message
    assert f"download http://127.0.0.1:9/ml-1m.zip yourself and place it at {dest}/ml-1m.zip" in (
        message
    )
    assert isinstance(caught.value, ConnectionError)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "files", "error", "message"),
    [
        ("ml-2m", {}, ValueError, "unknown release 'ml-2m'"),
        ("ml-1m", {}, DownloadError, r"could not download file://.*/ml-1m.zip.md5"),
        ("ml-1m", {"ml-1m.zip.md5": "no checksum here"}, ValueError, r"ml-1m.zip.md5 holds no MD5"),
        ("ml-1m", {"ml-1m.zip.md5": "0" * 32}, DownloadError, r"could not download .*/ml-1m.zip:"),
    ],
)
def test_bad_sources_are_named(
    tmp_path: Path, name: str, files: dict[str, str], error: type, message: str
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for file_name, text in files.items():
        (source / file_name).write_text(text)
    with pytest.raises(error, match=message):
        download_release(name, tmp_path / "raw", base_url=source.as_uri())
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []
