"""Session sequences survive a save/load round trip exactly."""

import numpy as np
import pyarrow as pa

from recsys_pipeline import schema as S
from recsys_pipeline.data.sessions import SessionConfig, build_sessions
from recsys_pipeline.data.split import SplitConfig, split_ratings
from recsys_pipeline.data.store import load_sessions, save_sessions


def test_sessions_roundtrip(tmp_path, rng):
    n = 200
    encoded = pa.table({
        S.USER_IDX: pa.array(rng.integers(0, 12, n), pa.int32()),
        S.ITEM_IDX: pa.array(rng.permutation(n) % 37, pa.int32()),
        S.USER_ID: pa.array(np.zeros(n), pa.int32()),
        S.ITEM_ID: pa.array(np.zeros(n), pa.int32()),
        S.RATING: pa.array(np.full(n, 3.0), pa.float32()),
        S.TIMESTAMP: pa.array(rng.integers(0, 10**6, n), pa.timestamp("s", tz="UTC")),
    })
    splits = split_ratings(encoded, SplitConfig(method="user_temporal", leave_last_k=1))
    sessions = build_sessions(splits, 12, 37, SessionConfig(max_len=5))
    paths = save_sessions(sessions, tmp_path / "seq")
    assert sorted(p.name for p in paths) == ["arrays.npz", "test.parquet", "train.parquet",
                                            "valid.parquet"]
    back = load_sessions(tmp_path / "seq")
    assert np.array_equal(back.vocab, sessions.vocab) and back.report == sessions.report
    for name in ("train", "valid", "test"):
        a, b = getattr(sessions, name), getattr(back, name)
        assert b.table.equals(a.table)
        for field in ("user_idx", "tokens", "lengths", "targets"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or np.array_equal(x, y), (name, field)
