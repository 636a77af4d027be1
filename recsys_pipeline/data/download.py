"""Download an official MovieLens zip from GroupLens, verified against its published MD5.

GroupLens publishes ``<name>.zip.md5`` beside each ``<name>.zip``. The zip is streamed to a
temporary file in the destination folder, hashed on the way, and moved into place with
``os.replace`` only when the hash matches, so a failed or interrupted download leaves nothing
behind. The ``.md5`` text is kept beside the zip, so a later call verifies the cached zip and
returns it without touching the network.

A zip already at the target that this module did not write (one placed there by hand) is never
replaced: online it is used when it matches the published MD5 and refused otherwise; offline
(the ``.md5`` cannot be fetched) it is used, with a warning that it was not verified, when it
is a readable MovieLens release of the requested name.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from recsys_pipeline.data.lake import atomic_path, write_atomic
from recsys_pipeline.data.movielens import OFFICIAL_RELEASES, detect_release

logger = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
_CHUNK = 1 << 20
PROGRESS_SECONDS = 5.0  # a progress line at most this often ...
PROGRESS_PERCENT = 5.0  # ... or each time this much more of the zip has arrived

Progress = Callable[[str], None]


class DownloadError(ConnectionError):
    """A release could not be fetched (offline, unreachable host, HTTP error)."""


def download_release(
    name: str,
    dest_dir: Path,
    base_url: str = GROUPLENS_URL,
    timeout: float = 60,
    progress: Progress | None = None,
) -> Path:
    """Download ``<base_url>/<name>.zip`` into ``dest_dir``, checked against its ``.md5``.

    Args:
        name: official release name, e.g. "ml-latest-small", "ml-1m", "ml-25m".
        dest_dir: folder for the zip (created if missing); the zip lands at
            ``dest_dir/<name>.zip`` and its checksum at ``dest_dir/<name>.zip.md5``.
        base_url: where the zips live (a ``file://`` URL works too).
        timeout: seconds to wait on the network per request.
        progress: called with one line of text per step (the URL fetched, a progress line
            at most every ``PROGRESS_SECONDS`` or ``PROGRESS_PERCENT`` of the zip, warnings);
            None sends them to this module's logger instead (progress lines at DEBUG,
            warnings at WARNING, the rest at INFO).

    Returns:
        The path of the zip. A zip already there that matches its checksum is returned without
        downloading it again. When the ``.md5`` cannot be fetched (offline), a zip placed there
        by hand (no ``.md5`` beside it, or one older than the zip) is returned unverified,
        with a warning, if it is a readable MovieLens release named ``name``.

    Raises:
        ValueError: unknown name, an unreadable ``.md5``, an MD5 mismatch of the download
            (naming both hashes; the download is discarded), a zip already at the target
            that does not match the published MD5 (left untouched, naming both hashes), or,
            offline, a zip at the target that is not a readable release of ``name``.
        DownloadError: the network failed and no usable zip is at the target (a
            ConnectionError naming the URL, the reason and where to put a copy downloaded
            by hand).
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
    ours = False  # the zip at the target was written by this function (and may be corrupt)
    if target.is_file() and checksum_file.is_file():
        recorded = _parse_md5(checksum_file.read_text(), str(checksum_file))
        if _md5_of(target) == recorded:
            _say(progress, logging.INFO, f"using cached {target} (MD5 verified)")
            return target
        # written here unless replaced after the .md5 was (a zip moved in by hand is newer)
        ours = target.stat().st_mtime_ns <= checksum_file.stat().st_mtime_ns
        if ours:
            _say(progress, logging.WARNING,
                 f"cached {target} does not match {checksum_file}: it is corrupt; "
                 "downloading it again")
    _say(progress, logging.INFO, f"fetching {url}.md5")
    try:
        checksum_text = _fetch(url + ".md5", url, target, timeout).decode("utf-8", "replace")
    except DownloadError as err:
        if not target.is_file():
            raise
        if ours:
            raise DownloadError(
                f"{target} does not match {checksum_file} (it is corrupt) and it cannot be "
                f"downloaded again: {err}"
            ) from err
        return _unverified(name, target, url, err, progress)
    expected = _parse_md5(checksum_text, url + ".md5")
    if target.is_file():
        actual = _md5_of(target)
        if actual == expected:
            _say(progress, logging.INFO,
                 f"using existing {target} (MD5 verified against {url}.md5)")
        elif ours:
            _download_verified(url, target, expected, timeout, progress)
        else:
            raise ValueError(
                f"{target} is already there but is not the {name} that GroupLens publishes: "
                f"its MD5 is {actual}, {url}.md5 says {expected}; it was left untouched. "
                f"To download {name} afresh, remove or rename {target} and run this again; "
                f"to ingest that file as it is, give it to the ingest config as "
                f"`path: {target}` (without `download: true`)"
            )
    else:
        _download_verified(url, target, expected, timeout, progress)
    write_atomic(checksum_file, lambda tmp: tmp.write_text(checksum_text, encoding="utf-8"))
    return target


def _unverified(
    name: str, target: Path, url: str, err: DownloadError, progress: Progress | None
) -> Path:
    """``target`` (no ``.md5`` beside it) when it is a readable release ``name``, offline."""
    try:
        found = detect_release(target).name
    except ValueError as bad:
        raise ValueError(
            f"{target} is not a usable {name} zip ({bad}), and it cannot be checked or "
            f"downloaded again: {err}"
        ) from bad
    if found != name:
        raise ValueError(
            f"{target} holds {found}, not {name}, and {name} cannot be downloaded: {err}"
        )
    _say(progress, logging.WARNING,
         f"using {target} as {name} WITHOUT verifying it against GroupLens's MD5: "
         f"{url}.md5 could not be fetched (offline?); it is a readable {name} release. "
         "Run this again online to verify it")
    return target


def _download_verified(
    url: str, target: Path, expected: str, timeout: float, progress: Progress | None
) -> None:
    """Stream ``url`` to a temp file beside ``target``; move it there if its MD5 matches."""
    _say(progress, logging.INFO, f"downloading {url} to {target}")
    with atomic_path(target) as tmp:  # moved onto target only if the block succeeds
        digest = hashlib.md5()
        with tmp.open("wb") as out, _open_url(url, url, target, timeout) as response:
            meter = _Meter(target.name, _content_length(response), progress)
            while chunk := _read(response, url, target):
                digest.update(chunk)
                out.write(chunk)
                meter.add(len(chunk))
            meter.done()
        if digest.hexdigest() != expected:
            raise ValueError(
                f"MD5 mismatch for {url}: expected {expected} (from {url}.md5), "
                f"got {digest.hexdigest()}; the download was discarded, try again"
            )
    _say(progress, logging.INFO, f"{target}: MD5 verified ({expected})")


class _Meter:
    """Progress lines for a transfer: bytes done (of the total when known) and MB/s."""

    def __init__(self, label: str, total: int | None, progress: Progress | None) -> None:
        self.label, self.total, self.progress = label, total, progress
        self.done_bytes = self.last_bytes = 0
        self.start = self.last_time = time.monotonic()
        self.last_percent = 0.0

    def add(self, n: int) -> None:
        self.done_bytes += n
        now = time.monotonic()
        percent = 100.0 * self.done_bytes / self.total if self.total else 0.0
        if (now - self.last_time >= PROGRESS_SECONDS
                or (self.total and percent - self.last_percent >= PROGRESS_PERCENT)):
            self.last_time, self.last_percent = now, percent
            self._line(now)

    def done(self) -> None:
        """The last line, unless the one before already said it all."""
        if self.done_bytes != self.last_bytes or self.done_bytes == 0:
            self._line(time.monotonic())

    def _line(self, now: float) -> None:
        self.last_bytes = self.done_bytes
        mb = self.done_bytes / 1e6
        rate = mb / max(now - self.start, 1e-6)
        if self.total:
            text = (f"{self.label}: {mb:.1f} of {self.total / 1e6:.1f} MB "
                    f"({100.0 * self.done_bytes / self.total:.0f}%), {rate:.1f} MB/s")
        else:
            text = f"{self.label}: {mb:.1f} MB, {rate:.1f} MB/s"
        _say(self.progress, logging.DEBUG, text)


def _content_length(response: IO[bytes]) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None and int(value) > 0 else None
    except ValueError:
        return None


def _say(progress: Progress | None, level: int, text: str) -> None:
    if progress is None:
        logger.log(level, text)
    else:  # the caller shows it (logging too would print warnings twice where unconfigured)
        progress(f"warning: {text}" if level >= logging.WARNING else text)


def _by_hand(zip_url: str, target: Path) -> str:
    return (f"download {zip_url} yourself and place it at {target}; once it is there, the same "
            "command uses it")


def _fetch(url: str, zip_url: str, target: Path, timeout: float) -> bytes:
    with _open_url(url, zip_url, target, timeout) as response:
        return _read(response, url, target, size=-1)


def _open_url(url: str, zip_url: str, target: Path, timeout: float) -> IO[bytes]:
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise DownloadError(
            f"could not download {url}: HTTP {err.code} {err.reason}; check the release name "
            f"and base URL, or {_by_hand(zip_url, target)}"
        ) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"could not download {url}: {reason}; you appear to be offline — "
            f"{_by_hand(zip_url, target)}"
        ) from err


def _read(response: IO[bytes], url: str, target: Path, size: int = _CHUNK) -> bytes:
    try:
        return response.read(size)
    except OSError as err:  # connection dropped or timed out mid-transfer
        raise DownloadError(
            f"could not download {url}: {err}; the connection failed — "
            f"{_by_hand(url.removesuffix('.md5'), target)}"
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


