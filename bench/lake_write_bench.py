"""Two lake-writing costs at ml-10m size: the duplicate-rating check and writing a CSR matrix.

* ``validate.check_unique_pairs`` (one sort of packed (user, item) keys) against pandas'
  ``duplicated(keep=False)``, which it replaced, on the same rows (checked equal);
* ``sparse.save_csr`` uncompressed (the default) against zip-compressed.

Seeded synthetic data: 10M ratings, 69,878 users x 10,677 items (ml-10m's shape), rows in
user order as the lake stores them.

    .venv/bin/python bench/lake_write_bench.py [--rows 10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from recsys_pipeline import schema as S
from recsys_pipeline.data import validate as V
from recsys_pipeline.data.sparse import save_csr


def best_of(repeat: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, 69_878, args.rows)).astype(np.int32)
    items = rng.integers(0, 10_677, args.rows).astype(np.int32)
    table = pa.table({S.USER_ID: users, S.ITEM_ID: items})

    ours, (mask, n_pairs) = best_of(args.repeat, lambda: V._duplicated(
        table, (S.USER_ID, S.ITEM_ID)))
    frame = pd.DataFrame({"u": users, "i": items})
    theirs, want = best_of(args.repeat, lambda: frame.duplicated(keep=False).to_numpy())
    assert (mask == want).all()
    print(f"duplicate check, {args.rows:,} rows ({int(mask.sum()):,} in {n_pairs:,} repeated "
          f"pairs): sort {ours:.2f} s, pandas {theirs:.2f} s")

    ratings = (rng.integers(1, 11, args.rows) / 2).astype(np.float32)
    matrix = sp.csr_matrix((ratings, (users, items)), shape=(69_878, 10_677))
    matrix.sum_duplicates()
    with tempfile.TemporaryDirectory() as tmp:
        for compressed in (False, True):
            path = os.path.join(tmp, f"m{int(compressed)}.npz")
            seconds, _ = best_of(args.repeat, lambda p=path, c=compressed: save_csr(matrix, p, c))
            print(f"save_csr {'compressed' if compressed else 'uncompressed'}: {seconds:.2f} s, "
                  f"{os.path.getsize(path) / 2**20:.0f} MB ({matrix.nnz:,} nonzeros)")


if __name__ == "__main__":
    main()
