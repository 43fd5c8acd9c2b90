"""`python -m grid bench mixers [--mixers ...] [--seq-lens 2048 8192] [--json OUT]`."""
from __future__ import annotations

import argparse
import json
import sys

from evals.mad.bench import main as mad_main
from grid.bench.mixers import bench_mixer
from grid.cliargs import StrictParser, int_range, parse
from grid.env import provenance
from grid.textable import table

# Lazy here: torch (heavy: never at import time on the driver); grid.models, grid.models.registry (they import torch
#   or Ray); os (one code path)


def mixers_main(argv: list[str]) -> int:
    p = StrictParser(prog="python -m grid bench mixers",
                                description="fwd+bwd tokens/s and peak memory per fused mixer layer (GPU)")
    p.add_argument("--mixers", nargs="*", help="registry names (default: every entry with a fused backend)")
    p.add_argument("--d-model", type=int_range(1), default=1024)
    p.add_argument("--seq-lens", type=int_range(1), nargs="*", default=[2048, 8192])
    p.add_argument("--tokens", type=int_range(1), default=16384, help="tokens per step (batch = tokens // seq_len)")
    p.add_argument("--warmup", type=int_range(0), default=3)
    p.add_argument("--iters", type=int_range(1), default=10)
    p.add_argument("--json", help="also write the rows as JSON")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--autotune", choices=("full", "first"), default="full",
                   help="full: Triton times every kernel config (the honest number, minutes of tuning per mixer); "
                        "first: the first config that runs, untuned (a lower bound, recorded in every row)")
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    import os  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from grid.models import autotune  # noqa: PLC0415

    os.environ[autotune.ENV] = args.autotune  # build_mixer installs the policy from here
    if not torch.cuda.is_available():
        print("error: the mixer benchmark measures GPU kernels and needs a CUDA GPU", file=sys.stderr)
        return 2
    from grid.models.registry import all_mixers  # noqa: PLC0415

    names = args.mixers or [s.name for s in all_mixers() if s.fused is not None]
    rows = []
    for name in names:
        for T in args.seq_lens:
            print(f"[bench] {name} T={T} ...", file=sys.stderr, flush=True)
            rows.append(bench_mixer(name, args.d_model, T, args.tokens, args.warmup, args.iters))
            print(json.dumps(rows[-1].as_dict()), file=sys.stderr, flush=True)
            if args.json:  # rewritten after every row: a killed run keeps what it measured
                _write(args.json, rows)
    prov = provenance()
    print(f"device={prov['gpu_name']} torch={prov['torch']} triton={prov['triton']} fla={prov['fla']} "
          f"d_model={args.d_model} tokens/step={args.tokens} bf16 autocast autotune={args.autotune}"
          + (" (first kernel config that runs: untuned, a lower bound)" if args.autotune == "first" else ""))
    attn = {r.seq_len: r.tokens_per_s for r in rows if r.mixer == "attention" and r.tokens_per_s}
    print(table(["mixer", "T", "batch", "tokens/s", "vs attention", "ms/step", "peak GiB", "params", "status", "detail"],
                [[r.mixer, r.seq_len, r.batch, r.tokens_per_s,
                  (r.tokens_per_s / attn[r.seq_len]) if r.tokens_per_s and attn.get(r.seq_len) else None,
                  r.ms_per_step, r.peak_mem_gib, r.params, r.status, r.detail] for r in rows], markdown=args.markdown))
    return 0 if all(r.status == "ok" for r in rows) else 1


def _write(path: str, rows) -> None:
    with open(path, "w") as fh:
        json.dump({"provenance": provenance(), "rows": [r.as_dict() for r in rows]}, fh, indent=1)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "mad":
        return mad_main(argv[1:])
    if not argv or argv[0] != "mixers":
        print("usage: python -m grid bench mixers [...] | python -m grid bench mad [...]", file=sys.stderr)
        return 2
    return mixers_main(argv[1:])
