"""`python -m grid results ...`: ask the parquet store questions with DuckDB.

    python -m grid results query "SELECT mixer, avg(test_acc) FROM results GROUP BY 1" [--store|--results DIR] [--format table|csv|json]
    python -m grid results show [--suite S] [--grid G] [--status ok] [--store DIR] [--limit N] [--columns A,B | --all]
    python -m grid results check [--store DIR] [--quarantine]
    python -m grid results rekey [--store DIR] [--dry-run]

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
import sys
from pathlib import Path

from grid import paths
from grid.cliargs import StrictParser, fail, int_range, non_empty, parse
from grid.results.check import check_store, quarantine
from grid.results.readonly import ReadOnlyError, query_readonly
from grid.results.rekey import rekey
from grid.results.show import show_tables, unknown_columns
from grid.results.store import ResultsStore
from grid.textable import frame_text, terminal_width

# Lazy here: duckdb (optional or slow to import: only the paths that use them)


def _parser() -> argparse.ArgumentParser:
    p = StrictParser(prog="python -m grid results", description="Query the parquet results store (DuckDB).")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("query", help="run one read-only SELECT over the views `results`, `curves` and `history`")
    q.add_argument("sql", type=non_empty("SQL statement"), help='e.g. "SELECT mixer, count(*) FROM results GROUP BY 1"')
    q.add_argument("--store", "--results", dest="store", default=paths.store(), help="store directory (default: $LINGRID_STORE or <repository>/benchmark/results)")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s = sub.add_parser("show", help="a table per suite: identity, status, main metrics (--columns, --all for more)")
    s.add_argument("--store", "--results", dest="store", default=paths.store())
    s.add_argument("--suite")
    s.add_argument("--grid")
    s.add_argument("--status", help="only rows with this status (ok, diverged, nan, error, skipped)")
    s.add_argument("--limit", type=int_range(0), default=200, help="at most this many rows (default 200; 0 = all)")
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--columns", default=None, metavar="A,B,...", help="show these columns (comma-separated) "
                   "instead of the suite's usual ones")
    s.add_argument("--all", action="store_true", help="every non-empty column (wide)")
    c = sub.add_parser("check", help="list unreadable files, stray temp files and trial keys stored twice")
    c.add_argument("--store", "--results", dest="store", default=paths.store())
    c.add_argument("--quarantine", action="store_true", help="move unreadable files to STORE/quarantine/, remove "
                   "abandoned temp files, keep only the newest row of a trial_key (the others go to history/)")
    r = sub.add_parser("rekey", help="move rows made under an earlier trial-key rule onto today's (grid/results/rekey.py)")
    r.add_argument("--store", "--results", dest="store", default=paths.store())
    r.add_argument("--dry-run", action="store_true", help="only list what would change")
    return p


def _render(df, fmt: str) -> None:
    if fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
        return
    if fmt == "json":
        sys.stdout.write(df.to_json(orient="records", date_format="iso", force_ascii=False) + "\n")
        return

    print(frame_text(df, width=terminal_width(), drop_empty=False))
    print(f"({len(df)} row{'s' if len(df) != 1 else ''})")


def _show(store, args) -> int:
    df = store.df(suite=args.suite, grid=args.grid, status=args.status)
    if "finished_at" in df.columns and len(df):
        df = df.sort_values(["suite", "grid", "finished_at"], kind="stable")
    if args.limit:
        df = df.head(args.limit)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    if columns:
        bad = unknown_columns(df, columns)
        if bad:
            print(f"error: --columns: no column {', '.join(map(repr, bad))} in the store; allowed: "
                  f"{', '.join(df.columns)}", file=sys.stderr)
            return 2
    if args.format != "table":
        cols = columns or [c for c in df.columns if df[c].notna().any()]
        _render(df[cols], args.format)
        return 0
    title = f"results in {args.store}"
    print(show_tables(df, columns=columns, every=args.all, width=terminal_width(), title=title))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(_parser(), argv)
    if isinstance(args, int):
        return args
    if not Path(args.store).is_dir():
        what = "is not a directory" if Path(args.store).exists() else "does not exist"
        return fail(f"--store {args.store} {what}: give the results store directory (default: $LINGRID_STORE or "
                    f"{paths.store()})")
    if args.cmd == "check":
        report = quarantine(args.store) if args.quarantine else check_store(args.store)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1

    if args.cmd == "rekey":
        report = rekey(args.store, dry_run=args.dry_run)
        print("\n".join(report.lines()))
        return 0

    import duckdb

    store = ResultsStore(args.store)
    try:
        if args.cmd == "query":
            df = query_readonly(store, args.sql)
            _render(df, args.format)
        else:
            return _show(store, args)
    except ReadOnlyError as exc:
        return fail(str(exc))
    except duckdb.Error as exc:
        return fail(str(exc))
    except BrokenPipeError:  # `... | head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
