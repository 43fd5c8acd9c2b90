"""Time the README's main job, cold and warm, and print the wall times as JSON (GPU host or CPU).

    python scripts/gpu/time_quickstart.py [--grid configs/grids/quickstart.yaml] [--json OUT.json]

Each pass runs `python -m grid run GRID` exactly as a user types it, from a folder outside the
repository (the defaults must not depend on the working directory), in a fresh benchmark root
(LINGRID_BENCHMARK):

* cold: an empty root: the data is prepared, every trial runs, Triton compiles (and, for trials that
  do not share a GPU, tunes) every kernel into the root's per-host kernel cache, and the parity gate
  (grid/check/gate.py) checks each fused mixer once (its cache, LINGRID_PARITY_CACHE, is in the root);
* warm: the same root with its results and Tune experiments deleted: every trial runs again, the data
  and the kernel cache are reused.

Targets (issue 19): on one H200 under 2 minutes cold, under 1 minute warm. The JSON has the device,
the date, the git sha, each pass's wall time and exit code, its trials' statuses, GPU shares
(gpu_index), kernel policy (autotune) and their own wall times.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: find `grid`

TARGETS_S = {"cold": 120.0, "warm": 60.0}


def device() -> str:
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"CPU ({os.cpu_count()} cores)"


def one_pass(name: str, grid: Path, root: Path, logs: Path) -> dict:
    from grid.results.store import ResultsStore  # noqa: PLC0415

    env = {**os.environ, "LINGRID_BENCHMARK": str(root), "LINGRID_PROGRESS": "plain",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    for var in ("LINGRID_STORE", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):  # everything under the root
        env.pop(var, None)
    env["LINGRID_PARITY_CACHE"] = str(root / "parity-cache")  # the parity gate's results: cold means cold too
    with tempfile.TemporaryDirectory() as elsewhere, open(logs / f"{name}.log", "w") as log:
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "grid", "run", str(grid)], cwd=elsewhere, env=env,
                            stdout=log, stderr=subprocess.STDOUT).returncode
        wall = time.perf_counter() - t0
    df = ResultsStore(root / "results").df(suite="lm")
    trials = [{k: (None if v != v else v) for k, v in r.items()}
              for r in df[[c for c in ("model_id", "hybrid", "status", "wall_s", "gpu_index", "autotune",
                                       "tokens_per_s", "backend") if c in df.columns]].to_dict("records")]
    return {"pass": name, "wall_s": round(wall, 1), "exit_code": rc, "target_s": TARGETS_S[name],
            "within_target": wall <= TARGETS_S[name], "trials": trials, "log": str(logs / f"{name}.log")}


def main(argv: list[str] | None = None) -> int:
    from grid.cliargs import StrictParser  # noqa: PLC0415

    p = StrictParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", default=str(ROOT / "configs" / "grids" / "quickstart.yaml"))
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--keep", action="store_true", help="keep the benchmark root (default: deleted)")
    args = p.parse_args(argv)
    from grid.env import git_sha  # noqa: PLC0415

    root = Path(tempfile.mkdtemp(prefix="lingrid-quickstart-"))
    logs = Path(args.json).resolve().parent if args.json else root.parent
    report = {"command": f"python -m grid run {args.grid}", "device": device(),
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git_sha": git_sha(),
              "load_avg_before": os.getloadavg(), "passes": []}
    try:
        report["passes"].append(one_pass("cold", Path(args.grid).resolve(), root, logs))
        for sub in ("results", "ray"):  # warm: every trial runs again, with the data and kernels cached
            shutil.rmtree(root / sub, ignore_errors=True)
        report["passes"].append(one_pass("warm", Path(args.grid).resolve(), root, logs))
    finally:
        report["load_avg_after"] = os.getloadavg()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            report["benchmark_root"] = str(root)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if all(p["exit_code"] == 0 for p in report["passes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
