"""Do packed MAD runs (threads of one process, grid/run/pack.py) train what solo runs train, and faster?

For each task's baseline setting: the six (lr, wd) runs one after another in this process (solo),
then the same six as one pack (run_members: one thread and CUDA stream each), without Ray. Prints
wall times (solo: the second of two passes, without kernel compiles), the speed-up, CUDA-graph
replays and fallbacks, and the largest relative difference of final test loss between a packed run
and its solo twin, next to the same difference between the two solo passes (the noise floor). If the pack does not finish within `--timeout`
seconds, the Python stacks of every thread are dumped (faulthandler) and the script exits 2.

    python scripts/gpu/check_pack.py [--arch gla] [--tasks CR SC] [--epochs 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere: find `grid`
from grid.cliargs import StrictParser  # noqa: E402  (one-line errors, no abbreviations)

from grid.paths import data_root  # noqa: E402


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-9)


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="gla")
    p.add_argument("--tasks", nargs="+", default=["CR", "SC"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data-path", default=data_root())
    p.add_argument("--timeout", type=float, default=180.0, help="seconds before a pack counts as hung")
    p.add_argument("--solo", choices=("on", "off"), default="on", help="off: packs only (no comparison)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    faulthandler.enable()  # a crash prints every thread's Python stack

    from evals.mad.data import ensure_all
    from evals.mad.protocol import MADRunConfig, run_mad
    from evals.mad.run import LRS, WDS
    from evals.mad.settings import all_settings
    from grid.run.pack import make_pack, run_members
    from grid.run.spec import make_trial

    settings = all_settings(args.tasks, which="baseline")
    ensure_all(settings, args.data_path, jobs=4, log=lambda m: print(m, flush=True))
    out = []
    for s in settings:
        configs = [MADRunConfig(setting=s.model_dump(), arch=args.arch, lr=lr, weight_decay=wd, epochs=args.epochs,
                                data_root=str(Path(args.data_path).resolve()), stop_acc=2.0).model_dump(mode="json")
                   for lr in LRS for wd in WDS]  # stop_acc 2: no early stop, equal work in both modes
        row = {"task": s.code, "runs": len(configs), "epochs": args.epochs}
        if args.solo == "on":  # twice: the second run's wall time has no kernel compile, and the two
            solo_runs = []     # solo passes give the run-to-run noise floor (fla's kernels are not bitwise deterministic)
            for _ in range(2):
                t0 = time.perf_counter()
                solo_runs.append([run_mad(c) for c in configs])
                row["solo_wall_s"] = time.perf_counter() - t0
            solo, solo2 = solo_runs
            row["solo_noise_max_rel_test_loss_diff"] = max(_rel(a["loss"], b["loss"]) for a, b in zip(solo, solo2))
        pack = make_pack([make_trial(c, suite="mad", grid="check", trainable="evals.mad.protocol:run_mad")
                          for c in configs])
        faulthandler.dump_traceback_later(args.timeout, exit=True)  # a hang shows every thread's stack
        t0 = time.perf_counter()
        rows = run_members(pack, {})
        row["pack_wall_s"] = time.perf_counter() - t0
        faulthandler.cancel_dump_traceback_later()
        packed = [r["metrics"] for r in rows]
        row["pack_status"] = [r["status"] for r in rows]
        row["pack_errors"] = [r["error"][-400:] for r in rows if r.get("error")]
        row["replays"] = [m.get("cuda_graph_replays") for m in packed]
        row["fallbacks"] = [m.get("cuda_graph_fallback") for m in packed if m.get("cuda_graph_fallback")]
        if args.solo == "on":
            row["speedup"] = row["solo_wall_s"] / row["pack_wall_s"]
            row["max_rel_test_loss_diff"] = max(_rel(a["loss"], b.get("loss", float("nan"))) for a, b in zip(solo, packed))
            row["solo_loss"] = [a["loss"] for a in solo]
            row["solo2_loss"] = [a["loss"] for a in solo2]
        row["pack_loss"] = [m.get("loss") for m in packed]
        out.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
