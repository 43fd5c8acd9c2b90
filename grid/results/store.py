"""The parquet results store: one file per trial, hive-partitioned, atomically published, read with DuckDB.

Layout (grid/results/scan.py lists every kind of file)::

    <root>/suite=<suite>/grid=<grid>/<trial_key>.parquet          one row per trial (results view)
    <root>/curves/suite=<suite>/grid=<grid>/<trial_key>.parquet   per-step rows (curves view)
    <root>/history/suite=<suite>/grid=<grid>/<trial_key>@<stamp>.parquet   replaced rows (history view)

Publishing: the file is written to ``.<trial_key>.parquet.<host>-<pid>-<id>.tmp`` in the same
directory (a name the ``*.parquet`` globs never match), flushed and fsynced, then ``os.replace``d
onto its final name. A reader therefore sees either the old file, the new file, or no file,
never a partial one; a crash leaves at most a stray ``.tmp``, which `clean_temps` removes at the
next run once its writer is gone.

One row per trial_key in the whole store: writing a trial_key that already has a row (in any
suite/grid folder: the same trial under a renamed grid is the same trial) first keeps the old row
in `history/` (hard link, so the swap has no gap), then replaces it. `--force` therefore keeps
history instead of overwriting it.

Reading: views are built over the files `scan` found readable; unreadable files (zero bytes,
truncated, not parquet) are skipped and named in one warning (`python -m grid results check`
lists them and can quarantine them), so one bad file never takes a reader down.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

from grid.results import scan as _scan
from grid.results.schema import DUCKDB_TYPES, FIXED_COLUMNS, SchemaError, check_name, empty_frame, row_table, rows_table

# Lazy here: duckdb, pandas, pyarrow (optional or slow to import: only the paths that use them)

RESULTS_GLOB = _scan.ROW_GLOB
CURVES_DIR = _scan.CURVES_DIR
HISTORY_DIR = _scan.HISTORY_DIR
HIVE = "hive_partitioning=true, union_by_name=true, hive_types={'suite': 'VARCHAR', 'grid': 'VARCHAR'}"

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
    tmp = _scan.tmp_name(final)
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


def _stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _keep(src: Path, dst: Path) -> None:
    """Put a copy of `src` at `dst` (a hard link when the file system allows: instant, no gap)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _views_sql(files: list[Path], empty_sql: str) -> str:
    if not files:
        return empty_sql
    listing = ", ".join(_sql_str(str(p)) for p in files)
    return f"SELECT * FROM read_parquet([{listing}], {HIVE})"


_EMPTY_RESULTS = "SELECT " + ", ".join(f"CAST(NULL AS {DUCKDB_TYPES[str(t)]}) AS {_ident(n)}"
                                       for n, t in FIXED_COLUMNS.items()) + " WHERE false"
_EMPTY_CURVES = ("SELECT CAST(NULL AS VARCHAR) AS trial_key, CAST(NULL AS VARCHAR) AS suite, "
                 "CAST(NULL AS VARCHAR) AS grid WHERE false")
# DuckDB names the file it could not read in its error message
_FILE_IN_ERROR = re.compile(r"""["']?(/[^"'\n]*?\.parquet)["']?""")


class ResultsStore:
    """Parquet results store rooted at `root` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.unreadable: dict[Path, str] = {}  # what the last read skipped (file -> why)
        self._warned: frozenset[Path] = frozenset()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    def path_for(self, trial_key: str, suite: str, grid: str) -> Path:
        return self.root / f"suite={check_name('suite', suite)}" / f"grid={check_name('grid', grid)}" / f"{check_name('trial_key', trial_key)}.parquet"

    def curve_path_for(self, trial_key: str, suite: str, grid: str) -> Path:
        return self.root / CURVES_DIR / f"suite={check_name('suite', suite)}" / f"grid={check_name('grid', grid)}" / f"{check_name('trial_key', trial_key)}.parquet"

    def files_of(self, trial_key: str, curves: bool = False) -> list[Path]:
        """Every row (or curve) file of `trial_key`, in whatever suite/grid folder it is."""
        base = self.root / CURVES_DIR if curves else self.root
        if not base.is_dir():
            return []
        return sorted(p for p in base.glob(f"suite=*/grid=*/{check_name('trial_key', trial_key)}.parquet") if p.is_file())

    # ----------------------------------------------------------------- writes
    def _retire(self, old: Path, stamp: str, curves: bool) -> None:
        """Keep the file a write is about to replace: in history/ (or quarantine/ when it is unreadable)."""
        rel = old.relative_to(self.root / CURVES_DIR if curves else self.root)  # files_of: under self.root
        if _scan.unreadable_reason(old) is not None:
            dst = self.root / _scan.QUARANTINE_DIR / (Path(CURVES_DIR) / rel if curves else rel)
            dst = dst.with_name(f"{dst.stem}@{stamp}{dst.suffix}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, dst)
            return
        hist = self.root / HISTORY_DIR / (Path(CURVES_DIR) / rel if curves else rel)
        _keep(old, hist.with_name(f"{hist.stem}@{stamp}{hist.suffix}"))

    def retire(self, path: Path, curves: bool = False) -> None:
        """Move the row (or curve) file `path` of this store into history/ (a re-keyed or superseded row)."""
        self._retire(path, _stamp(), curves)
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def _publish_keeping_history(self, table, final: Path, trial_key: str, curves: bool) -> Path:
        stamp = _stamp()
        existing = self.files_of(trial_key, curves=curves)
        for old in existing:
            self._retire(old, stamp, curves)
        _publish(table, final)
        for old in existing:  # the same trial stored under another grid: one row per trial_key
            if old != final:
                try:
                    old.unlink()
                except FileNotFoundError:
                    pass
        return final

    def write_row(self, row: dict[str, Any], suite: str, grid: str) -> Path:
        """Publish one trial row as `<root>/suite=<suite>/grid=<grid>/<trial_key>.parquet`.

        A row the trial_key already had (in any grid folder) is kept in history/ first."""
        row = dict(row)
        for col, val in (("suite", suite), ("grid", grid)):
            check_name(col, val)
            if row.get(col) not in (None, val):
                raise SchemaError(f"row has {col}={row[col]!r} but is written to partition {col}={val!r}")
            row[col] = val
        key = row.get("trial_key")
        check_name("trial_key", key)
        table = row_table(row)
        return self._publish_keeping_history(table, self.path_for(key, suite, grid), key, curves=False)

    def write_curve(self, trial_key: str, rows: list[dict[str, Any]], suite: str, grid: str) -> Path:
        """Publish a trial's per-step rows (e.g. step, loss, lr) as one file in the curves table."""
        check_name("trial_key", trial_key)
        rows = [{"trial_key": trial_key, **{k: v for k, v in r.items() if k not in ("trial_key", "suite", "grid")}} for r in rows]
        if not rows:
            rows = [{"trial_key": trial_key}]  # keep the file valid; a curve with no points
        table = rows_table(rows)
        return self._publish_keeping_history(table, self.curve_path_for(trial_key, suite, grid), trial_key, curves=True)

    def clean_temps(self) -> list[Path]:
        """Remove the temp files of writes that a killed process left behind (see grid/results/scan.py)."""
        return _scan.clean_temps(self.root)

    # ------------------------------------------------------------------ reads
    def _note_unreadable(self, bad: dict[Path, str]) -> None:
        """One warning per new set of unreadable files, naming each."""
        self.unreadable = dict(bad)
        if not bad or frozenset(bad) <= self._warned:
            return
        self._warned = self._warned | frozenset(bad)
        listing = "; ".join(f"{p} ({why})" for p, why in sorted(bad.items()))
        # stderr, not logging: a CLI user must see it whatever logging is configured to do
        print(f"warning: skipped {len(bad)} unreadable file(s) in the results store {self.root} (`python -m grid "
              f"results check --store {self.root}` lists them, `--quarantine` moves them aside): {listing}",
              file=sys.stderr, flush=True)

    def connect(self):
        """A fresh in-memory DuckDB connection with the `results`, `curves` and `history` views defined."""
        import duckdb

        con = duckdb.connect(":memory:")
        try:
            self.define_views(con)
        except BaseException:
            con.close()
            raise
        return con

    def define_views(self, con, files: "_scan.StoreFiles | None" = None) -> "_scan.StoreFiles":
        """Create the views on `con` over the store's readable files (skipping and naming the others)."""
        files = files if files is not None else _scan.scan(self.root)
        self._note_unreadable(files.bad)
        con.execute("SET TimeZone='UTC'")
        con.execute(f"CREATE OR REPLACE VIEW results AS {_views_sql(files.rows, _EMPTY_RESULTS)}")
        con.execute(f"CREATE OR REPLACE VIEW curves AS {_views_sql(files.curves, _EMPTY_CURVES)}")
        con.execute(f"CREATE OR REPLACE VIEW history AS {_views_sql(files.history, _EMPTY_RESULTS)}")
        return files

    def query(self, sql: str, params: list[Any] | None = None):
        """Run SQL against the views `results`, `curves` and `history`; returns a pandas DataFrame.

        The views cover the files of one scan. A file that a concurrent write moved away since the
        scan is dropped from it; one whose footer looked fine but that DuckDB cannot read is marked
        unreadable and dropped; then the query runs again. Other DuckDB errors (bad SQL, unknown
        column) propagate as `duckdb.Error`. Trusted SQL only: user input goes through
        grid/results/readonly.py.
        """
        import duckdb

        files = _scan.scan(self.root)
        for _ in range(len(files.rows) + len(files.curves) + len(files.history) + 2):
            con = None
            try:
                con = duckdb.connect(":memory:")
                self.define_views(con, files)  # binding the views reads the files' schemas: inside the retry
                rel = con.execute(sql, params or [])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # pandas deprecation chatter from inside duckdb's converter
                    if rel.description is None:
                        import pandas as pd
                        return pd.DataFrame()
                    return rel.df()
            except duckdb.Error as err:
                named = self._store_files_in(err)
                if not named:
                    raise
                for p in named:
                    if p.is_file():  # the footer looked fine, the data is not: skipped from now on
                        _scan.mark_bad(p, f"DuckDB cannot read it: {' '.join(str(err).split())[:200]}")
                        files.bad[p] = "DuckDB cannot read it"
                    for listing in (files.rows, files.curves, files.history):
                        if p in listing:
                            listing.remove(p)
            finally:
                if con is not None:
                    con.close()
        raise RuntimeError(f"the store {self.root} kept failing under the query; run `python -m grid results check`")

    def _store_files_in(self, exc: Exception) -> list[Path]:
        """The store files a DuckDB error names (to skip them, or to notice they moved), or []."""
        root = os.path.abspath(self.root)
        out = []
        head = str(exc).split("\nLINE ", 1)[0]  # the message, not the echo of the SQL (it lists other files)
        for m in _FILE_IN_ERROR.finditer(head):
            path = Path(m.group(1))
            if os.path.abspath(path).startswith(root + os.sep) and "*" not in str(path):
                out.append(path)
        return out

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

    def unreadable_keys(self) -> set[str]:
        """trial_keys whose row file the last read skipped as unreadable (their outcome is unknown)."""
        root = Path(os.path.abspath(self.root))
        return {p.stem for p in self.unreadable if p.parent.parent.parent == root}
