"""Folders of the lake that hold more than one file: session sequences and CSR matrices.

Session sequences: ``train.parquet``, ``valid.parquet``, ``test.parquet`` (list<int32> item_idx
columns, for SQL and inspection) plus ``arrays.npz`` (the padded int32 token arrays, lengths,
targets and the vocabulary, ready to move to a GPU). Saved with ``np.savez`` and read with
``allow_pickle=False``; every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys_pipeline.data import lake
from recsys_pipeline.data.sessions import SequenceBatch, Sessions

ARRAYS_FILE = "arrays.npz"
_SPLITS = ("train", "valid", "test")


def save_sessions(sessions: Sessions, directory: str | Path) -> list[Path]:
    """Write ``sessions`` into ``directory``; returns the files written (Parquet first)."""
    directory = Path(directory)
    paths = []
    arrays: dict[str, np.ndarray] = {"vocab": sessions.vocab}
    for name in _SPLITS:
        batch: SequenceBatch = getattr(sessions, name)
        paths.append(lake.write_parquet(batch.table, directory / f"{name}.parquet"))
        arrays[f"{name}_user_idx"] = batch.user_idx
        arrays[f"{name}_tokens"] = batch.tokens
        arrays[f"{name}_lengths"] = batch.lengths
        if batch.targets is not None:
            arrays[f"{name}_targets"] = batch.targets
    report = np.array(sorted(sessions.report.items()), dtype=object)
    arrays["report_keys"] = report[:, 0].astype(str) if len(report) else np.array([], str)
    arrays["report_values"] = (
        report[:, 1].astype(np.int64) if len(report) else np.array([], np.int64)
    )
    paths.append(lake.write_atomic(directory / ARRAYS_FILE, lambda tmp: _savez(tmp, arrays)))
    return paths


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
        np.savez(fh, **arrays)


def load_sessions(directory: str | Path) -> Sessions:
    """Read what :func:`save_sessions` wrote (FileNotFoundError naming a missing file)."""
    directory = Path(directory)
    path = directory / ARRAYS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no session arrays; materialize session_sequences")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    batches = {}
    for name in _SPLITS:
        batches[name] = SequenceBatch(
            table=lake.read_parquet(directory / f"{name}.parquet"),
            user_idx=arrays[f"{name}_user_idx"],
            tokens=arrays[f"{name}_tokens"],
            lengths=arrays[f"{name}_lengths"],
            targets=arrays.get(f"{name}_targets"),
        )
    report = dict(
        zip(arrays["report_keys"].tolist(), arrays["report_values"].tolist(), strict=True)
    )
    return Sessions(vocab=arrays["vocab"], report=report, **batches)
