"""User SQL over the store, read-only: `python -m grid results query SQL` runs here and nowhere else.

Three locks, each enough for its own class of harm:
1. Only one statement, and it must be a query (SELECT, WITH ... SELECT, FROM ..., DESCRIBE, SUMMARIZE):
   COPY ... TO, ATTACH, CREATE, INSERT, SET, PRAGMA, INSTALL/LOAD, EXPORT are refused before DuckDB
   runs anything.
2. The database is a throw-away file holding only the three view definitions, opened read-only.
3. DuckDB's file access is limited to the store directory (`allowed_directories`, external access
   off, configuration locked), so `read_csv('/etc/passwd')` or a URL fails even inside a SELECT.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from grid.results.store import ResultsStore

# Lazy here: duckdb, pandas (optional or slow to import: only the paths that use them)

QUERY_TYPES = ("SELECT",)


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"  # DuckDB StatementType names a user statement may have


class ReadOnlyError(ValueError):
    """The statement is not a read-only query of the store (the message says why, on one line)."""


def check_statement(sql: str) -> None:
    """Refuse anything but a single query statement (ReadOnlyError naming what was found)."""
    import duckdb  # noqa: PLC0415

    if not sql or not sql.strip():
        raise ReadOnlyError("SQL: an empty statement; give one SELECT, e.g. \"SELECT count(*) FROM results\"")
    con = duckdb.connect(":memory:")
    try:
        statements = con.extract_statements(sql)
    finally:
        con.close()
    if not statements:
        raise ReadOnlyError("SQL: no statement found; give one SELECT over results, curves or history")
    if len(statements) > 1:
        raise ReadOnlyError(f"SQL: {len(statements)} statements; `results query` runs exactly one SELECT")
    kind = getattr(statements[0].type, "name", str(statements[0].type)).split(".")[-1]
    if kind not in QUERY_TYPES:
        raise ReadOnlyError(f"SQL: {kind} statements are not allowed: `results query` is read-only (allowed: a "
                            "SELECT over the views results, curves and history)")


def query_readonly(store, sql: str):
    """Run one user SELECT against `store`'s views with the locks above; a pandas DataFrame.

    ReadOnlyError for a refused statement; duckdb.Error for bad SQL or a refused file access."""
    import duckdb  # noqa: PLC0415

    check_statement(sql)
    root = Path(store.root).resolve()
    resolved = ResultsStore(root)
    with tempfile.TemporaryDirectory(prefix="lingrid-query-") as tmp:
        db = os.path.join(tmp, "views.duckdb")
        con = duckdb.connect(db)
        try:
            resolved.define_views(con)
        finally:
            con.close()
        store.unreadable = resolved.unreadable
        allowed = str(root) + os.sep
        con = duckdb.connect(db, read_only=True)
        try:
            # in this order: DuckDB refuses allowed_directories once external access is off
            con.execute(f"SET allowed_directories = [{_sql_str(allowed)}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
            rel = con.execute(sql)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if rel.description is None:
                    import pandas as pd  # noqa: PLC0415

                    return pd.DataFrame()
                return rel.df()
        finally:
            con.close()


__all__ = ["ReadOnlyError", "check_statement", "query_readonly"]
