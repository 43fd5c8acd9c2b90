"""`python -m evals.mad leaderboard [--results DIR] [--epochs N]`: the MAD table of every architecture in the store."""
from __future__ import annotations

import argparse
import sys

from evals.mad.protocols import PROTOCOLS
from grid.cliargs import StrictParser, int_range, parse


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(prog="python -m evals.mad")
    sub = p.add_subparsers(dest="cmd", required=True)
    lb = sub.add_parser("leaderboard", help="MAD table (six task scores and their mean) per architecture")
    lb.add_argument("--results", default="benchmark/results")
    lb.add_argument("--epochs", type=int_range(1), default=None, help="only rows run for this many epochs (default: "
                                                                     "all; one table per protocol)")
    lb.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                    help="only rows of this MAD protocol (default: every protocol, one table each)")
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    from evals.mad.scoring import by_protocol, mad_table, protocol_label, to_markdown  # noqa: PLC0415
    from grid.results.store import ResultsStore  # noqa: PLC0415

    df = ResultsStore(args.results).query("SELECT * FROM results WHERE suite = 'mad'")
    if df.empty:
        print(f"no MAD results in {args.results}")
        return 1
    shown = 0
    for key, part in by_protocol(df):
        if (args.epochs is not None and int(key["epochs"]) != args.epochs) or \
                (args.protocol is not None and key["protocol"] != args.protocol):
            continue
        print(f"\nMAD leaderboard, {protocol_label(key)} ({len(part)} runs; best of lr x wd per setting, "
              f"mean per task):\n")
        print(to_markdown(mad_table(part)))
        shown += 1
    if not shown:
        print(f"no MAD rows match --epochs {args.epochs} --protocol {args.protocol} in {args.results}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
