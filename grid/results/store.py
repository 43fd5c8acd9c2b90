"""The parquet results store: one file per trial, hive-partitioned, atomically published, read with DuckDB.

Layout::

    <root>/suite=<suite>/grid=<grid>/<trial_key>.parquet          one row per trial (results view)
    <root>/curves/suite=<suite>/grid=<grid>/<trial_key>.parquet   per-step rows (curves view)

Publishing: the file is written to ``.<trial_key>.parquet.<unique>.tmp`` in the same directory
(a name the ``*.parquet`` read glob never matches), flushed and fsynced, then ``os.replace``d
onto its final name. A reader therefore sees either the old file, the new file, or no file,
never a partial one; a crash leaves at most a stray ``.tmp`` that queries ignore. Re-writing a
trial_key replaces its file: last write wins, no duplicates. The unique part of the temp name
keeps two processes that publish the same trial_key at once from writing into one temp file.
"""
from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable

from grid.results.schema import DUCKDB_TYPES, FIXED_COLUMNS, SchemaError, check_name, empty_frame, row_table, rows_table

RESULTS_GLOB = "suite=*/grid=*/*.parquet"
CURVES_DIR = "curves"

__all__ = ["ResultsStore", "SchemaError", "RESULTS_GLOB"]


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(table, final: Path) -> Path:
    """Write `table` to `final` atomically (temp file in the same dir + fsync + os.replace)."""
    import pyarrow.parquet as pq

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(final.parent)
    return final


class ResultsStore:
    """Parquet results store rooted at `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    def path_for(self, trial_key: str, suite: str, grid: str) -> Path:
        return self.root / f"suite={check_name('suite', suite)}" / f"grid={check_name('grid', grid)}" / f"{check_name('trial_key', trial_key)}.parquet"

    def curve_path_for(self, trial_key: str, suite: str, grid: str) -> Path:
        return self.root / CURVES_DIR / f"suite={check_name('suite', suite)}" / f"grid={check_name('grid', grid)}" / f"{check_name('trial_key', trial_key)}.parquet"

    # ----------------------------------------------------------------- writes
    def write_row(self, row: dict[str, Any], suite: str, grid: str) -> Path:
        """Publish one trial row as `<root>/suite=<suite>/grid=<grid>/<trial_key>.parquet` (overwrites)."""
        row = dict(row)
        for col, val in (("suite", suite), ("grid", grid)):
            check_name(col, val)
            if row.get(col) not in (None, val):
                raise SchemaError(f"row has {col}={row[col]!r} but is written to partition {col}={val!r}")
            row[col] = val
        key = row.get("trial_key")
        check_name("trial_key", key)
        table = row_table(row)
        return _publish(table, self.path_for(key, suite, grid))

    def write_curve(self, trial_key: str, rows: list[dict[str, Any]], suite: str, grid: str) -> Path:
        """Publish a trial's per-step rows (e.g. step, loss, lr) as one file in the curves table."""
        check_name("trial_key", trial_key)
        rows = [{"trial_key": trial_key, **{k: v for k, v in r.items() if k not in ("trial_key", "suite", "grid")}} for r in rows]
        if not rows:
            rows = [{"trial_key": trial_key}]  # keep the file valid; a curve with no points
        table = rows_table(rows)
        return _publish(table, self.curve_path_for(trial_key, suite, grid))

    # ------------------------------------------------------------------ reads
    def _has_files(self, base: Path) -> bool:
        return next(iter(base.glob(RESULTS_GLOB)), None) is not None

    def connect(self):
        """A fresh in-memory DuckDB connection with the `results` and `curves` views defined."""
        import duckdb

        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone='UTC'")
        hive = "hive_partitioning=true, union_by_name=true, hive_types={'suite': 'VARCHAR', 'grid': 'VARCHAR'}"
        if self._has_files(self.root):
            con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet({_sql_str(str(self.root / RESULTS_GLOB))}, {hive})")
        else:
            cols = ", ".join(f"CAST(NULL AS {DUCKDB_TYPES[str(t)]}) AS {_ident(n)}" for n, t in FIXED_COLUMNS.items())
            con.execute(f"CREATE VIEW results AS SELECT {cols} WHERE false")
        curves = self.root / CURVES_DIR
        if self._has_files(curves):
            con.execute(f"CREATE VIEW curves AS SELECT * FROM read_parquet({_sql_str(str(curves / RESULTS_GLOB))}, {hive})")
        else:
            con.execute("CREATE VIEW curves AS SELECT CAST(NULL AS VARCHAR) AS trial_key, CAST(NULL AS VARCHAR) AS suite, "
                        "CAST(NULL AS VARCHAR) AS grid WHERE false")
        return con

    def query(self, sql: str, params: list[Any] | None = None):
        """Run SQL against the views `results` and `curves`; returns a pandas DataFrame.

        DuckDB errors (bad SQL, unknown column) propagate as `duckdb.Error`.
        """
        con = self.connect()
        try:
            rel = con.execute(sql, params or [])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pandas deprecation chatter from inside duckdb's converter
                if rel.description is None:
                    import pandas as pd
                    return pd.DataFrame()
                return rel.df()
        finally:
            con.close()

    def df(self, **filters: Any):
        """All result rows matching column == value filters (a list/tuple/set value means IN).

        Example: ``store.df(suite="mad", status="ok")``. No filter gives the whole table.
        """
        where, params = [], []
        for col, val in filters.items():
            if val is None:
                continue
            if isinstance(val, (list, tuple, set, frozenset)):
                vals = list(val)
                if not vals:
                    where.append("false")
                    continue
                where.append(f"{_ident(col)} IN ({', '.join('?' for _ in vals)})")
                params.extend(vals)
            else:
                where.append(f"{_ident(col)} = ?")
                params.append(val)
        sql = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        out = self.query(sql, params)
        if out.empty and not len(out.columns):
            return empty_frame()
        return out

    def ok_keys(self, suite: str | None = None, grid: str | None = None) -> set[str]:
        """trial_keys that have a status='ok' row (optionally in one suite / grid partition)."""
        return self.trial_keys(status="ok", suite=suite, grid=grid)

    def trial_keys(self, status: str | Iterable[str] | None = None, suite: str | None = None,
                   grid: str | None = None) -> set[str]:
        """trial_keys present in the store, optionally filtered by status (one or several)."""
        where, params = [], []
        if status is not None:
            status = [status] if isinstance(status, str) else list(status)
            if not status:
                return set()
            where.append(f"status IN ({', '.join('?' for _ in status)})")
            params.extend(status)
        for col, val in (("suite", suite), ("grid", grid)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = "SELECT DISTINCT trial_key FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        return set(self.query(sql, params)["trial_key"].tolist())
