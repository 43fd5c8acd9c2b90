"""`python -m grid results ...`: ask the parquet store questions with DuckDB.

    python -m grid results query "SELECT mixer, avg(test_acc) FROM results GROUP BY 1" [--store|--results DIR] [--format table|csv|json]
    python -m grid results show [--suite S] [--grid G] [--status ok] [--store DIR] [--limit N]
    python -m grid results check [--store DIR] [--quarantine]

Views: `results` (one row per trial), `curves` (per-step rows, when trials wrote any) and
`history` (rows that a later write of the same trial replaced, e.g. with --force).
`query` is read-only (grid/results/readonly.py): one SELECT; statements that write files, attach
databases or read outside the store are refused.
Exit codes: 0 ok, 1 `check` found problems, 2 bad SQL / bad arguments / no such store (one line on
stderr, no traceback).
Imports only pandas / pyarrow / duckdb (never torch), so it starts fast.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grid.cliargs import StrictParser, fail, int_range, non_empty, parse

DEFAULT_STORE = "benchmark/results"

# columns `show` prints first when present; metric columns follow
SHOW_COLUMNS = ["trial_key", "suite", "grid", "status", "model_id", "mixer", "backend", "task", "setting",
                "lr", "wd", "seed", "wall_s", "attempt", "gpu_index"]


def _default_store() -> str:
    return os.environ.get("LINGRID_STORE", DEFAULT_STORE)


def _parser() -> argparse.ArgumentParser:
    p = StrictParser(prog="python -m grid results", description="Query the parquet results store (DuckDB).")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("query", help="run one read-only SELECT over the views `results`, `curves` and `history`")
    q.add_argument("sql", type=non_empty("SQL statement"), help='e.g. "SELECT mixer, count(*) FROM results GROUP BY 1"')
    q.add_argument("--store", "--results", dest="store", default=_default_store(), help=f"store directory (default: $LINGRID_STORE or {DEFAULT_STORE})")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s = sub.add_parser("show", help="pretty table of trials (key columns + metrics)")
    s.add_argument("--store", "--results", dest="store", default=_default_store())
    s.add_argument("--suite")
    s.add_argument("--grid")
    s.add_argument("--status", help="only rows with this status (ok, diverged, nan, error, skipped)")
    s.add_argument("--limit", type=int_range(0), default=200, help="at most this many rows (default 200; 0 = all)")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    c = sub.add_parser("check", help="list unreadable files, stray temp files and trial keys stored twice")
    c.add_argument("--store", "--results", dest="store", default=_default_store())
    c.add_argument("--quarantine", action="store_true", help="move unreadable files to STORE/quarantine/, remove "
                   "abandoned temp files, keep only the newest row of a trial_key (the others go to history/)")
    return p


def _render(df, fmt: str, title: str | None = None) -> None:
    if fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
        return
    if fmt == "json":
        sys.stdout.write(df.to_json(orient="records", date_format="iso", force_ascii=False) + "\n")
        return
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        print(df.to_string(index=False))
        return
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in df.columns:
        table.add_column(str(col), overflow="fold")
    for rec in df.itertuples(index=False):
        table.add_row(*[_fmt_cell(v) for v in rec])
    Console(soft_wrap=False).print(table)
    print(f"({len(df)} row{'s' if len(df) != 1 else ''})")


def _fmt_cell(v) -> str:
    import math

    if v is None:
        return ""
    try:
        import pandas as pd

        if pd.isna(v) is True:
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(v, float):
        if math.isfinite(v) and v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.4g}"
        return f"{v:.6g}"
    return str(v)


def _show_frame(store, args):
    from grid.results.schema import FIXED_COLUMNS

    df = store.df(suite=args.suite, grid=args.grid, status=args.status)
    if "finished_at" in df.columns and len(df):
        df = df.sort_values(["suite", "grid", "finished_at"], kind="stable")
    metrics = [c for c in df.columns if c not in FIXED_COLUMNS]
    cols = [c for c in SHOW_COLUMNS if c in df.columns and (c in ("trial_key", "status") or df[c].notna().any())]
    cols += [c for c in metrics if df[c].notna().any()]
    if "error" in df.columns and df["error"].notna().any():
        df = df.assign(error=df["error"].map(lambda e: e if not isinstance(e, str) else e.strip().splitlines()[-1][:80]))
        cols.append("error")
    df = df[cols]
    if args.limit:
        df = df.head(args.limit)
    return df


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(_parser(), argv)
    if isinstance(args, int):
        return args
    if not Path(args.store).is_dir():
        what = "is not a directory" if Path(args.store).exists() else "does not exist"
        return fail(f"--store {args.store} {what}: give the results store directory (default: $LINGRID_STORE or "
                    f"{DEFAULT_STORE})")
    if args.cmd == "check":
        from grid.results.check import check_store, quarantine  # noqa: PLC0415

        report = quarantine(args.store) if args.quarantine else check_store(args.store)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1

    import duckdb

    from grid.results.readonly import ReadOnlyError, query_readonly
    from grid.results.store import ResultsStore

    store = ResultsStore(args.store)
    try:
        if args.cmd == "query":
            df = query_readonly(store, args.sql)
            _render(df, args.format)
        else:
            df = _show_frame(store, args)
            title = f"results in {args.store}" + (f" (suite={args.suite})" if args.suite else "")
            _render(df, args.format, title=title)
    except ReadOnlyError as exc:
        return fail(str(exc))
    except duckdb.Error as exc:
        return fail(str(exc))
    except BrokenPipeError:  # `... | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
