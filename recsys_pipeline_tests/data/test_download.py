"""Tests of download_release on file:// URLs and a closed loopback port (never the internet)."""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from recsys_pipeline.cli import main
from recsys_pipeline.data import download
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
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("ml-latest-small.zip", "ml-latest-small.zip.md5"):  # not mkstemp's 0600
        assert (dest / name).stat().st_mode & 0o777 == 0o666 & ~umask


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
    _age(dest / "ml-latest-small.zip", 60)  # written before its .md5, as download_release does
    lines: list[str] = []
    path = download_release(
        "ml-latest-small", dest, base_url=server.as_uri(), progress=lines.append
    )
    assert path.read_bytes() == (server / "ml-latest-small.zip").read_bytes()
    assert any("corrupt; downloading it again" in line for line in lines)
    assert sorted(p.name for p in dest.iterdir()) == [
        "ml-latest-small.zip",
        "ml-latest-small.zip.md5",
    ]


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
    assert "once it is there, the same command uses it" in message
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


def _age(path: Path, seconds: int) -> None:
    """Make ``path`` look ``seconds`` older (its mtime)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - seconds * 10**9))


def _placed_zip(tmp_path: Path, dest: Path, kind: str, name: str = "ml-1m") -> Path:
    """A zip of release ``kind`` placed by hand at ``dest/<name>.zip``."""
    dest.mkdir(parents=True, exist_ok=True)
    return zip_release(write_release(tmp_path / "build", kind), dest / f"{name}.zip")


OFFLINE = ["http://127.0.0.1:9", "file:///nonexistent/mirror/of/grouplens"]


@pytest.mark.parametrize("base_url", OFFLINE)
def test_offline_a_placed_zip_is_used_with_a_warning(tmp_path: Path, base_url: str) -> None:
    dest = tmp_path / "raw"
    placed = _placed_zip(tmp_path, dest, "ml-1m")
    before = placed.read_bytes()
    lines: list[str] = []
    path = download_release("ml-1m", dest, base_url=base_url, timeout=2, progress=lines.append)
    assert path == placed and path.read_bytes() == before
    assert detect_release(path).name == "ml-1m"
    warning = [line for line in lines if line.startswith("warning: ")]
    assert len(warning) == 1
    assert f"using {placed} as ml-1m WITHOUT verifying it against GroupLens's MD5" in warning[0]
    assert f"{base_url}/ml-1m.zip.md5 could not be fetched" in warning[0]
    assert [p.name for p in dest.iterdir()] == ["ml-1m.zip"]  # no .md5 claims it was verified


def test_offline_a_placed_zip_newer_than_a_stale_md5_is_used(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "ml-1m.zip.md5").write_text("0" * 32)  # from an earlier download
    _age(dest / "ml-1m.zip.md5", 60)
    placed = _placed_zip(tmp_path, dest, "ml-1m")  # a fresh copy moved in by hand since
    lines: list[str] = []
    path = download_release("ml-1m", dest, base_url=OFFLINE[0], timeout=2, progress=lines.append)
    assert path == placed and any("WITHOUT verifying" in line for line in lines)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("ml-latest-small", r"ml-1m.zip holds ml-latest-small, not ml-1m, and ml-1m cannot be"),
        (None, r"ml-1m.zip is not a usable ml-1m zip \(.*not a readable zip"),
    ],
)
def test_offline_a_placed_zip_that_is_not_the_release_is_refused(
    tmp_path: Path, kind: str | None, message: str
) -> None:
    dest = tmp_path / "raw"
    if kind is None:
        dest.mkdir()
        (dest / "ml-1m.zip").write_bytes(b"not a zip at all")
    else:
        _placed_zip(tmp_path, dest, kind)
    before = (dest / "ml-1m.zip").read_bytes()
    with pytest.raises(ValueError, match=message) as caught:
        download_release("ml-1m", dest, base_url=OFFLINE[0], timeout=2)
    assert "could not download http://127.0.0.1:9/ml-1m.zip.md5" in str(caught.value)
    assert (dest / "ml-1m.zip").read_bytes() == before
    assert [p.name for p in dest.iterdir()] == ["ml-1m.zip"]


def test_offline_a_corrupt_cache_is_an_error_and_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "ml-1m.zip").write_bytes(b"half a download")
    (dest / "ml-1m.zip.md5").write_text("0" * 32)
    _age(dest / "ml-1m.zip", 60)
    with pytest.raises(DownloadError, match=r"ml-1m.zip does not match .*ml-1m.zip.md5 \(it is "
                       r"corrupt\) and it cannot be downloaded again: could not download"):
        download_release("ml-1m", dest, base_url=OFFLINE[0], timeout=2)
    assert (dest / "ml-1m.zip").read_bytes() == b"half a download"


@pytest.mark.parametrize("stale_md5", [False, True])
def test_a_users_zip_not_matching_the_published_md5_is_refused_untouched(
    tmp_path: Path, server: Path, stale_md5: bool
) -> None:
    dest = tmp_path / "raw"
    dest.mkdir()
    if stale_md5:  # an earlier download's .md5, older than the zip moved in by hand since
        (dest / "ml-latest-small.zip.md5").write_text("0" * 32)
        _age(dest / "ml-latest-small.zip.md5", 60)
    mine = _placed_zip(tmp_path, dest, "ml-latest-small", "ml-latest-small")
    # a re-zipped copy: same tables, other bytes than GroupLens's zip
    with zipfile.ZipFile(mine, "a") as archive:
        archive.writestr("ml-latest-small/README.txt", "my notes")
    before = mine.read_bytes()
    published = md5((server / "ml-latest-small.zip").read_bytes())
    with pytest.raises(ValueError) as caught:
        download_release("ml-latest-small", dest, base_url=server.as_uri())
    message = str(caught.value)
    assert f"{mine} is already there but is not the ml-latest-small that GroupLens publishes" in (
        message
    )
    assert (
        f"its MD5 is {md5(before)}, {server.as_uri()}/ml-latest-small.zip.md5 says {published}"
        in message
    )
    assert "left untouched" in message
    assert f"remove or rename {mine} and run this again" in message
    assert f"`path: {mine}`" in message
    assert mine.read_bytes() == before
    expected = ["ml-latest-small.zip"] + (["ml-latest-small.zip.md5"] if stale_md5 else [])
    assert sorted(p.name for p in dest.iterdir()) == expected
    if stale_md5:
        assert (dest / "ml-latest-small.zip.md5").read_text() == "0" * 32


def test_progress_names_the_urls_and_reports_the_transfer(tmp_path: Path, server: Path) -> None:
    lines: list[str] = []
    download_release("ml-latest-small", tmp_path / "raw", base_url=server.as_uri(),
                     progress=lines.append)
    url = f"{server.as_uri()}/ml-latest-small.zip"
    size = (server / "ml-latest-small.zip").stat().st_size / 1e6
    assert lines[0] == f"fetching {url}.md5"
    assert lines[1] == f"downloading {url} to {tmp_path / 'raw' / 'ml-latest-small.zip'}"
    assert re.fullmatch(
        rf"ml-latest-small\.zip: {size:.1f} of {size:.1f} MB \(100%\), [0-9.]+ MB/s", lines[2]
    )
    assert lines[3].endswith("MD5 verified (" + md5((server / "ml-latest-small.zip").read_bytes())
                             + ")")
    assert len(lines) == 4


def test_progress_lines_come_every_5_percent_or_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(download, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    lines: list[str] = []
    meter = download._Meter("ml-32m.zip", 1_000_000, lines.append)
    for _ in range(1000):  # 0.1 % a step, one step a millisecond
        clock[0] += 0.001
        meter.add(1000)
    meter.done()
    assert len(lines) == 20 and lines[-1].startswith("ml-32m.zip: 1.0 of 1.0 MB (100%)")
    assert lines[0] == "ml-32m.zip: 0.1 of 1.0 MB (5%), 1.0 MB/s"
    lines.clear()
    clock[0] = 0.0
    meter = download._Meter("ml-latest.zip", None, lines.append)  # no Content-Length
    for _ in range(102):  # 1 s a step
        clock[0] += 1
        meter.add(100_000)
    meter.done()
    assert len(lines) == 21 and lines[0] == "ml-latest.zip: 0.5 MB, 0.1 MB/s"
    assert lines[-1] == "ml-latest.zip: 10.2 MB, 0.1 MB/s"  # the end, however long since


def test_cli_download_prints_progress_to_stderr(
    tmp_path: Path, server: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    argv = ["--lake", str(lake), "download", "ml-latest-small", "--base-url", server.as_uri()]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"ml-latest-small: {lake / 'raw' / 'ml-latest-small.zip'}" in out
    assert f"fetching {server.as_uri()}/ml-latest-small.zip.md5\n" in err
    assert "(100%)" in err and "MD5 verified" in err


def test_cli_download_offline_then_with_the_zip_placed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    argv = ["--lake", str(lake), "download", "ml-1m", "--base-url", OFFLINE[0]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"place it at {lake / 'raw' / 'ml-1m.zip'}; once it is there, the same command" in err
    _placed_zip(tmp_path, lake / "raw", "ml-1m")
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"ml-1m: {lake / 'raw' / 'ml-1m.zip'}" in out
    assert "warning: using" in err and "WITHOUT verifying" in err
