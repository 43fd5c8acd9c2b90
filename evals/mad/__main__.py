"""`python -m evals.mad leaderboard [--results DIR] [--epochs N]`: the MAD table of every architecture in the store."""
from __future__ import annotations

import argparse
import sys

from evals.mad.protocols import PROTOCOLS
from evals.mad.scoring import by_protocol, mad_tables
from grid import paths
from grid.cliargs import StrictParser, int_range, parse
from grid.results.store import ResultsStore


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(prog="python -m evals.mad")
    sub = p.add_subparsers(dest="cmd", required=True)
    lb = sub.add_parser("leaderboard", help="MAD table (six task scores and their mean) per architecture")
    lb.add_argument("--results", default=paths.store(), help="results store (default: $LINGRID_STORE or "
                    "<repository>/benchmark/results)")
    lb.add_argument("--epochs", type=int_range(1), default=None, help="only rows run for this many epochs (default: "
                                                                     "all; one table per protocol)")
    lb.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                    help="only rows of this MAD protocol (default: every protocol, one table each)")
    args = parse(p, argv)
    if isinstance(args, int):
        return args

    df = ResultsStore(args.results).query("SELECT * FROM results WHERE suite = 'mad'")
    if df.empty:
        print(f"no MAD results in {args.results}")
        return 1
    parts = [(key, part) for key, part in by_protocol(df)
             if (args.epochs is None or int(key["epochs"]) == args.epochs)
             and (args.protocol is None or key["protocol"] == args.protocol)]
    if not parts:
        print(f"no MAD rows match --epochs {args.epochs} --protocol {args.protocol} in {args.results}")
        return 1
    if len(parts) > 1:
        print(f"{sum(len(p) for _, p in parts)} MAD runs in {args.results} under {len(parts)} protocols: one table "
              "each (numbers from different protocols are not comparable)")
    text, ok = mad_tables(parts, "MAD leaderboard", sep=";")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
