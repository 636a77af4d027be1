"""The Parquet data lake on disk: atomic writes, reads and content hashes.

Every file the pipeline produces is written to a temporary file in the destination folder and
then moved into place with ``os.replace`` (atomic on POSIX), so a failed or interrupted write
never leaves a half-written file where a reader would find it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"


def file_mode() -> int:
    """rw for everyone the umask allows: what ``open()`` would give a new file (mkstemp's
    temporary files are 0600, which the final lake file must not keep)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    Args:
        path: final destination. Its folder is created if missing.

    Yields:
        A temporary file path in the same folder (same filesystem, so the rename is atomic).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and atomically move the result onto ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` as zstd-compressed Parquet, atomically.

    Args:
        table: the Arrow table to store.
        path: destination ``.parquet`` file.

    Returns:
        The destination path.
    """
    return write_atomic(
        path, lambda tmp: pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
    )


def read_parquet(path: str | Path) -> pa.Table:
    """Read a Parquet file of the lake, in the exact Arrow schema it was written with.

    Parquet has no seconds unit for timestamps (``timestamp[s]`` is stored as milliseconds),
    so the table is cast back to the Arrow schema that pyarrow stores in the file's metadata.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such lake file; materialize the asset that writes it")
    table = pq.read_table(p)
    stored = (pq.read_metadata(p).metadata or {}).get(b"ARROW:schema")
    if stored is not None:
        written = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
        if not written.equals(table.schema):
            table = table.cast(written.with_metadata(table.schema.metadata))
    return table


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str)
    return write_atomic(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_json(path: str | Path) -> Any:
    """Read a JSON file of the lake, with a clear error when it is missing."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such lake file; materialize the asset that writes it")
    return json.loads(p.read_text(encoding="utf-8"))


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(paths: list[Path]) -> str:
    """One hex SHA-256 over several files: the hash of their names and individual hashes."""
    digest = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        digest.update(f"{p.name}:{file_sha256(p)}\n".encode())
    return digest.hexdigest()
