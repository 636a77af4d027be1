"""Download an official MovieLens zip from GroupLens, verified against its published MD5.

GroupLens publishes ``<name>.zip.md5`` beside each ``<name>.zip``. The zip is streamed to a
temporary file in the destination folder, hashed on the way, and moved into place with
``os.replace`` only when the hash matches, so a failed or interrupted download leaves nothing
behind. The ``.md5`` text is kept beside the zip, so a later call verifies the cached zip and
returns it without touching the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from recsys_pipeline.data.movielens import OFFICIAL_RELEASES

logger = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
_CHUNK = 1 << 20


class DownloadError(ConnectionError):
    """A release could not be fetched (offline, unreachable host, HTTP error)."""


def download_release(
    name: str, dest_dir: Path, base_url: str = GROUPLENS_URL, timeout: float = 60
) -> Path:
    """Download ``<base_url>/<name>.zip`` into ``dest_dir``, checked against its ``.md5``.

    Args:
        name: official release name, e.g. "ml-latest-small", "ml-1m", "ml-25m".
        dest_dir: folder for the zip (created if missing); the zip lands at
            ``dest_dir/<name>.zip`` and its checksum at ``dest_dir/<name>.zip.md5``.
        base_url: where the zips live (a ``file://`` URL works too).
        timeout: seconds to wait on the network per request.

    Returns:
        The path of the verified zip. A zip already there that matches its checksum is
        returned without downloading it again.

    Raises:
        ValueError: unknown name, an unreadable ``.md5``, or an MD5 mismatch (naming both
            hashes; the download is discarded).
        DownloadError: the network failed (a ConnectionError naming the URL, the reason and
            where to put a copy downloaded by hand).
    """
    if name not in OFFICIAL_RELEASES:
        raise ValueError(
            f"unknown release {name!r}; expected one of {', '.join(OFFICIAL_RELEASES)}"
        )
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{name}.zip"
    target = dest_dir / f"{name}.zip"
    checksum_file = dest_dir / f"{name}.zip.md5"
    if target.is_file() and checksum_file.is_file():
        if _md5_of(target) == _parse_md5(checksum_file.read_text(), str(checksum_file)):
            logger.info("using cached %s (MD5 verified)", target)
            return target
        logger.warning("cached %s does not match %s; downloading it again", target, checksum_file)
    checksum_text = _fetch(url + ".md5", url, target, timeout).decode("utf-8", "replace")
    expected = _parse_md5(checksum_text, url + ".md5")
    if target.is_file() and _md5_of(target) == expected:
        logger.info("using existing %s (MD5 verified against %s.md5)", target, url)
    else:
        _download_verified(url, target, expected, timeout)
    _write_atomic(checksum_file, checksum_text.encode("utf-8"))
    return target


def _download_verified(url: str, target: Path, expected: str, timeout: float) -> None:
    """Stream ``url`` to a temp file beside ``target``; move it there if its MD5 matches."""
    logger.info("downloading %s to %s", url, target)
    handle, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(handle, "wb") as out, _open_url(url, url, target, timeout) as response:
            while chunk := _read(response, url, target):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            raise ValueError(
                f"MD5 mismatch for {url}: expected {expected} (from {url}.md5), "
                f"got {digest.hexdigest()}; the download was discarded, try again"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(url: str, zip_url: str, target: Path, timeout: float) -> bytes:
    with _open_url(url, zip_url, target, timeout) as response:
        return _read(response, url, target, size=-1)


def _open_url(url: str, zip_url: str, target: Path, timeout: float) -> IO[bytes]:
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"could not download {url}: HTTP {err.code} {err.reason}; check the release name "
            f"and base URL, or download {zip_url} yourself and place it at {target}"
        ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"could not download {url}: {reason}; you appear to be offline — download "
            f"{zip_url} yourself and place it at {target}"
        ) from err


def _read(response: IO[bytes], url: str, target: Path, size: int = _CHUNK) -> bytes:
    try:
        return response.read(size)
    except OSError as err:  # connection dropped or timed out mid-transfer
        raise DownloadError(
            f"could not download {url}: {err}; the connection failed — download it yourself "
            f"and place it at {target}"
        ) from err


def _parse_md5(text: str, where: str) -> str:
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if match is None:
        raise ValueError(f"{where} holds no MD5 checksum (32 hex digits): {text[:80]!r}")
    return match.group(0).lower()


def _md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
