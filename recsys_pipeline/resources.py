"""Dagster resources: where the lake lives. DuckDB comes from dagster-duckdb's resource."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from recsys_pipeline.data.lakedb import DB_FILE_NAME

DEFAULT_LAKE_ROOT = "data_lake"
DEFAULT_RELEASE_DIR = "raw/ml-latest-small"


class LakeResource(dg.ConfigurableResource):
    """The data lake folder; relative paths are taken from the working directory."""

    root: str = DEFAULT_LAKE_ROOT  # lake folder: raw/, clean/, prepared/, ... and lake.duckdb

    def path(self, *parts: str) -> Path:
        """An absolute path inside the lake."""
        return Path(self.root).resolve().joinpath(*parts)

    def raw_dir(self) -> Path:
        """Where raw releases (the shipped default, downloads, new users' files) live."""
        return self.path("raw")


def build_resources(lake_root: str = DEFAULT_LAKE_ROOT) -> dict[str, object]:
    """The resources every asset needs, for a lake at ``lake_root`` (tests pass a tmp folder)."""
    from recsys_pipeline.io_managers import (
        JsonIOManager,
        MatricesIOManager,
        ParquetIOManager,
        SessionsIOManager,
    )

    lake = LakeResource(root=lake_root)
    duckdb = DuckDBResource(database=str(Path(lake_root) / DB_FILE_NAME))
    return {
        "lake": lake,
        "duckdb": duckdb,
        "io_manager": ParquetIOManager(lake=lake, duckdb=duckdb),
        "json_io_manager": JsonIOManager(lake=lake),
        "sessions_io_manager": SessionsIOManager(lake=lake, duckdb=duckdb),
        "matrices_io_manager": MatricesIOManager(lake=lake, duckdb=duckdb),
    }
