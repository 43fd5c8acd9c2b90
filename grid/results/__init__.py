"""Parquet results store (one file per trial, hive-partitioned by suite/grid) queried with DuckDB."""
from __future__ import annotations

from grid.results import schema
from grid.results.store import ResultsStore

__all__ = ["ResultsStore", "SchemaError", "FIXED_COLUMNS", "STATUSES"]


def __getattr__(name: str):  # lazy: `import grid.results` stays cheap
    if name == "ResultsStore":
        return ResultsStore
    if name in ("SchemaError", "FIXED_COLUMNS", "STATUSES"):
        return getattr(schema, name)
    raise AttributeError(f"module 'grid.results' has no attribute {name!r}")
