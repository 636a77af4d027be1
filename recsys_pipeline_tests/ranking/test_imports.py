"""The ranking core imports without dagster, mlflow, duckdb or pandas (the GPU box)."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "recsys_pipeline.models.ranking_base", "recsys_pipeline.models.autoencoder",
    "recsys_pipeline.models.multvae", "recsys_pipeline.models.ease",
    "recsys_pipeline.models.gru4rec", "recsys_pipeline.models.sasrec",
    "recsys_pipeline.models.two_tower", "recsys_pipeline.models.cooccurrence",
    "recsys_pipeline.training.ranking_loop", "recsys_pipeline.training.ranking_data",
    "recsys_pipeline.evaluation.strong", "recsys_pipeline.evaluation.nextitem",
]


def test_ranking_core_imports_stay_light() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + "heavy = {'dagster', 'mlflow', 'duckdb', 'pandas'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
