"""`python -m evals.mad leaderboard [--results DIR] [--epochs N]`: the MAD table of every architecture in the store."""
from __future__ import annotations

import argparse
import sys

from grid import paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.mad")
    sub = p.add_subparsers(dest="cmd", required=True)
    lb = sub.add_parser("leaderboard", help="MAD table (six task scores and their mean) per architecture")
    lb.add_argument("--results", default=paths.store(), help="results store (default: $LINGRID_STORE or "
                    "<repository>/benchmark/results)")
    lb.add_argument("--epochs", type=int, default=None, help="only rows of this protocol (default: every protocol, "
                                                             "one table each)")
    args = p.parse_args(argv)
    from evals.mad.scoring import by_protocol, mad_table, protocol_label, to_markdown  # noqa: PLC0415
    from grid.results.store import ResultsStore  # noqa: PLC0415

    df = ResultsStore(args.results).query("SELECT * FROM results WHERE suite = 'mad'")
    if df.empty:
        print(f"no MAD results in {args.results}")
        return 1
    parts = by_protocol(df)
    if args.epochs is not None:
        parts = [(proto, part) for proto, part in parts if proto.get("epochs") == args.epochs]
        if not parts:
            print(f"no MAD results with epochs={args.epochs} in {args.results}")
            return 1
    if len(parts) > 1:
        print(f"{len(df)} MAD runs in {args.results} under {len(parts)} protocols: one table each "
              "(numbers from different protocols are not comparable)")
    status = 0
    for proto, part in parts:
        print(f"\nMAD leaderboard, protocol: {protocol_label(proto)} ({len(part)} runs):\n")
        try:
            print(to_markdown(mad_table(part)))
        except ValueError as exc:  # rows that cannot be scored (e.g. without acc): say so, go on
            print(f"cannot score these rows: {exc}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
