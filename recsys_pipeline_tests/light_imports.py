"""The check that core modules import without the orchestration and tracking stack."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable

HEAVY = frozenset({"dagster", "mlflow", "duckdb", "pandas"})


def heavy_imports(modules: Iterable[str], heavy: Iterable[str] = HEAVY) -> list[str]:
    """The ``heavy`` top-level packages that importing ``modules`` in a fresh interpreter
    pulls in (sorted; ``[]`` when none)."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"heavy = {set(heavy)!r}\n"
        "import json\n"
        "print(json.dumps(sorted(heavy & {m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
