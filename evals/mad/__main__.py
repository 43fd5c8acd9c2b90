"""`python -m evals.mad leaderboard [--results DIR] [--epochs N]`: the MAD table of every architecture in the store."""
from __future__ import annotations

import argparse
import sys
from grid.cliargs import StrictParser, int_range, parse


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(prog="python -m evals.mad")
    sub = p.add_subparsers(dest="cmd", required=True)
    lb = sub.add_parser("leaderboard", help="MAD table (six task scores and their mean) per architecture")
    lb.add_argument("--results", default="benchmark/results")
    lb.add_argument("--epochs", type=int_range(1), default=None, help="only rows of this protocol (default: every protocol, "
                                                             "one table each)")
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    from evals.mad.scoring import mad_table, to_markdown  # noqa: PLC0415
    from grid.results.store import ResultsStore  # noqa: PLC0415

    df = ResultsStore(args.results).query("SELECT * FROM results WHERE suite = 'mad'")
    if df.empty:
        print(f"no MAD results in {args.results}")
        return 1
    for epochs, part in sorted(df.groupby("epochs"), key=lambda kv: kv[0]):
        if args.epochs is not None and epochs != args.epochs:
            continue
        print(f"\nMAD leaderboard, protocol epochs={int(epochs)} ({len(part)} runs):\n")
        print(to_markdown(mad_table(part)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
