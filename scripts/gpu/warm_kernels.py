"""Compile fla's Triton kernels for a set of GPU jobs in parallel processes, before timing them.

The first use of an fla kernel at a new shape compiles every autotuning candidate (minutes per
layer type, one CPU core each). Timed work (the mixer benchmark, an LM grid on one GPU) runs one
job at a time, so those minutes add up. This script runs one short forward+backward per job in
parallel processes to fill Triton's on-disk compile cache; the timed run then finds compiled
binaries and only autotunes (fast). The warm-up processes run with FLA_CACHE_RESULTS=0 so that
autotuning choices made on a crowded GPU are not cached: the timed run makes its own.

    python scripts/gpu/warm_kernels.py lm configs/grids/throughput-125m.yaml --jobs 8
    python scripts/gpu/warm_kernels.py bench --mixers gla retnet --seq-lens 2048 8192 --jobs 8
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere: find `grid`
from grid.cliargs import StrictParser  # noqa: E402  (one-line errors, no abbreviations)


def _lm_child(grid: str, index: int) -> None:
    import torch

    from grid.lm.gridspec import expand, load_grid
    from grid.models import build_model

    trial = _distinct_models(expand(load_grid(grid), 4096, "warm-up", count=False))[index]
    model = build_model(trial.model).cuda()
    x = torch.randint(0, 4096, (1, int(trial.train["seq_len"])), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x).float().logsumexp(-1).mean()
    loss.backward()
    torch.cuda.synchronize()


def _distinct_models(trials):
    seen, out = set(), []
    for t in trials:
        key = json.dumps([t.model.model_dump(mode="json"), t.train["seq_len"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _run_all(jobs: list[tuple[str, list[str]]], n_jobs: int) -> int:
    env = {**os.environ, "FLA_CACHE_RESULTS": "0"}

    def run(job):
        label, cmd = job
        t0 = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] if p.returncode else []
        print(f"[warm] {label}: rc={p.returncode} {time.perf_counter() - t0:.0f}s {' '.join(tail)[:300]}", flush=True)
        return p.returncode

    with ThreadPoolExecutor(n_jobs) as pool:
        codes = list(pool.map(run, jobs))
    return max(codes, default=0)


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    lm = sub.add_parser("lm", help="one process per distinct model of an LM grid")
    lm.add_argument("grid")
    lm.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    b = sub.add_parser("bench", help="one process per (mixer, sequence length) of `grid bench mixers`")
    b.add_argument("--mixers", nargs="*")
    b.add_argument("--seq-lens", type=int, nargs="*", default=[2048, 8192])
    b.add_argument("--autotune", choices=("full", "first"), default="full",
                   help="the policy the timed `grid bench mixers --autotune` run will use (first: compile one config)")
    for q in (lm, b):
        q.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
        q.add_argument("--dry-run", action="store_true", help="list the jobs, run nothing")
    args = p.parse_args(argv)

    if args.what == "lm":
        if args.child is not None:
            _lm_child(args.grid, args.child)
            return 0
        from grid.lm.gridspec import expand, load_grid

        trials = _distinct_models(expand(load_grid(args.grid), 4096, "warm-up", count=False))
        jobs = [(f"{t.arch}/{t.hybrid}/{t.scale}", [sys.executable, __file__, "lm", args.grid, "--child", str(i)])
                for i, t in enumerate(trials)]
    else:
        from grid.models.registry import all_mixers

        names = args.mixers or [s.name for s in all_mixers() if s.fused is not None]
        jobs = [(f"{m} T={T}", [sys.executable, "-m", "grid", "bench", "mixers", "--mixers", m, "--seq-lens", str(T),
                                "--warmup", "1", "--iters", "1", "--autotune", args.autotune])
                for m in names for T in args.seq_lens]
    print(f"[warm] {len(jobs)} job(s), {args.jobs} at a time", flush=True)
    if args.dry_run:
        print("\n".join(label for label, _ in jobs))
        return 0
    return _run_all(jobs, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
