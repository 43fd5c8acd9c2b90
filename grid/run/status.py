"""`python -m grid status`: done / failed / in flight per suite and grid, from the store and Tune's experiment dirs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grid import paths
from grid.cliargs import StrictParser, parse
from grid.results.store import ResultsStore
from grid.run.runner import MANIFEST
from grid.textable import table


def _in_flight(ray_tmp: Path, rows: set[str]) -> list[list[Any]]:
    """Per Tune experiment dir (with a lingrid manifest): trials without a row, with and without a trial dir
    (Tune creates a trial's dir when it schedules the trial, or when it restores the experiment)."""

    out = []
    if not ray_tmp.is_dir():
        return out
    for exp in sorted(p for p in ray_tmp.iterdir() if (p / MANIFEST).is_file()):
        try:
            keys = list(json.loads((exp / MANIFEST).read_text())["trials"])
        except (OSError, ValueError, KeyError):
            continue
        open_keys = [k for k in keys if k not in rows]
        started = sum(1 for k in open_keys if (exp / k).is_dir())
        if open_keys:
            out.append([exp.name, len(keys), len(keys) - len(open_keys), started, len(open_keys) - started])
    return out


def status_main(argv: list[str] | None = None) -> int:
    p = StrictParser(prog="python -m grid status", description="Done / failed / in flight per grid.")
    p.add_argument("--results", default=paths.store())
    p.add_argument("--ray-tmp-path", default=paths.ray_tmp())
    args = parse(p, argv)
    if isinstance(args, int):
        return args

    store = ResultsStore(args.results)
    df = store.query("SELECT suite, grid, status, count(*) AS n FROM results GROUP BY suite, grid, status")
    keys = store.trial_keys()
    if len(df):
        stats = ["ok", "diverged", "nan", "error", "skipped"]
        body = []
        for (suite, grid), part in df.groupby(["suite", "grid"], sort=True):
            by = dict(zip(part["status"], part["n"]))
            body.append([suite, grid, *[int(by.get(s, 0)) for s in stats], int(part["n"].sum())])
        print(f"results in {args.results}:")
        print(table(["suite", "grid", "ok", "diverged", "nan", "failed", "skipped", "rows"], body))
    else:
        print(f"results in {args.results}: no rows")
    flight = _in_flight(Path(args.ray_tmp_path), keys)
    print()
    if flight:
        print(f"Tune experiments in {args.ray_tmp_path} with trials that have no row yet. A trial with a trial dir "
              "was scheduled: it is running now, or its run was interrupted (`run` again resumes it from its last "
              "checkpoint); one without has not started:")
        print(table(["experiment", "trials", "with row", "trial dir, no row", "not started"], flight))
    else:
        print(f"no unfinished trials in the Tune experiments under {args.ray_tmp_path}")
    return 0



__all__ = ["status_main"]
