"""`python -m grid analyze ...`: LM leaderboards, scaling-law fits and plots from the results store.

    python -m grid analyze scaling     [--results DIR] [--grid NAME] [--plots DIR] [--points N] [--skip-frac F]
                                       [--per-trial-seeds] [--format table|markdown|csv|json]
    python -m grid analyze leaderboard [--results DIR] [--grid NAME] [--markdown]
    python -m grid analyze plots --out DIR [--results DIR] [--grid NAME]
    python -m grid analyze recall      [--results DIR] [--grid NAME] [--plots DIR] [--all-settings]
                                       [--format table|markdown|csv]

--results defaults to $LINGRID_STORE or benchmark/results.
Exit codes: 0 ok; 1 no LM trials in the store (or matplotlib missing for plots), with a one-line
message and no traceback; 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys

from grid.analysis.data import NoResults, default_store, load_lm
from grid.analysis.leaderboard import leaderboard_text
from grid.analysis.plots import PlotsUnavailable, plot_recall, write_plots
from grid.analysis.recall import recall_table, table_text
from grid.analysis.scaling import coefficient_table, fit_scaling, render_table
from grid.cliargs import StrictParser, float_range, int_range, parse


def _parser() -> argparse.ArgumentParser:
    p = StrictParser(prog="python -m grid analyze",
                                description="Analyse LM trials in the results store: leaderboards, "
                                "scaling fits, plots.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--results", default=default_store(), metavar="DIR",
                        help="results store directory (default: $LINGRID_STORE or benchmark/results)")
        sp.add_argument("--grid", metavar="NAME", help="only trials of this grid (default: all grids)")

    def fit_opts(sp):
        sp.add_argument("--points", type=int_range(2), default=64, metavar="N",
                        help="log-spaced compute grid points of the envelope (default 64)")
        sp.add_argument("--skip-frac", type=float_range(0, 0.999999), default=0.0, metavar="F",
                        help="drop each curve's first fraction F of compute, e.g. warmup (default 0)")
        sp.add_argument("--per-trial-seeds", action="store_true",
                        help="treat seeds as separate envelope candidates instead of averaging them")

    s = sub.add_parser("scaling", help="power-law fits L(C), N_opt(C), D_opt(C) per architecture")
    common(s)
    fit_opts(s)
    s.add_argument("--plots", metavar="DIR", help="also write the PNG plots into DIR")
    s.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")

    lb = sub.add_parser("leaderboard", help="one table per scale, ranked by validation loss")
    common(lb)
    lb.add_argument("--markdown", action="store_true", help="GitHub markdown tables")

    pl = sub.add_parser("plots", help="write loss-curve and loss-vs-compute PNGs")
    common(pl)
    fit_opts(pl)
    pl.add_argument("--out", required=True, metavar="DIR", help="directory for the PNG files")

    rc = sub.add_parser("recall", allow_abbrev=False,
                        help="LM loss and recall scores against the attention fraction, per linear variant")
    common(rc)
    rc.add_argument("--plots", metavar="DIR", help="also write one PNG per metric into DIR")
    rc.add_argument("--all-settings", action="store_true",
                    help="print every per-setting recall column, not only the summaries")
    rc.add_argument("--format", choices=["table", "markdown", "csv"], default="table")
    return p


def _scaling(args) -> int:
    if args.points < 2:
        print("error: --points must be at least 2", file=sys.stderr)
        return 2
    if not 0 <= args.skip_frac < 1:
        print("error: --skip-frac must be in [0, 1)", file=sys.stderr)
        return 2
    results, curves = load_lm(args.results, args.grid)
    fits = fit_scaling(curves, results, n_points=args.points, skip_frac=args.skip_frac,
                       average_seeds=not args.per_trial_seeds)
    if args.format == "csv":
        sys.stdout.write(fits.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(fits.to_json(orient="records", force_ascii=False) + "\n")
    else:
        print("Scaling fits (studies.md B.5, Chinchilla approach 1): Y = beta·C^alpha, C in PFLOP/s-days, "
              "training-loss envelope; N = non-embedding params, D = tokens.")
        print(render_table(coefficient_table(fits), markdown=args.format == "markdown"))
    if args.plots:
        return _plots(args, args.plots)
    return 0


def _plots(args, out) -> int:
    try:
        paths = write_plots(args.results, out, args.grid, n_points=args.points, skip_frac=args.skip_frac)
    except PlotsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} plot{'s' if len(paths) != 1 else ''} to {out}", file=sys.stderr)
    for p in paths:
        print(f"  {p}", file=sys.stderr)
    return 0


def _leaderboard(args) -> int:
    sys.stdout.write(leaderboard_text(args.results, args.grid, markdown=args.markdown))
    return 0


def _recall(args) -> int:
    results, _ = load_lm(args.results, args.grid, curves=False)
    table = recall_table(results)
    if table.empty:
        print(f"error: no ok LM trials in {args.results}" + (f" (grid {args.grid})" if args.grid else ""),
              file=sys.stderr)
        return 1
    if args.format == "csv":
        sys.stdout.write(table.to_csv(index=False))
    else:
        sys.stdout.write(table_text(table, summaries_only=not args.all_settings, markdown=args.format == "markdown"))
    if args.plots:
        try:
            paths = plot_recall(results, args.plots, args.grid)
        except PlotsUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {len(paths)} plot{'s' if len(paths) != 1 else ''} to {args.plots}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        if args.cmd == "scaling":
            return _scaling(args)
        if args.cmd == "leaderboard":
            return _leaderboard(args)
        if args.cmd == "recall":
            return _recall(args)
        return _plots(args, args.out)
    except NoResults as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
