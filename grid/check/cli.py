"""`python -m grid check parity [--mixers ...] [--dtypes fp32 bf16] [--json OUT]`."""
from __future__ import annotations

import argparse
import json
import sys

from grid.check import interpret
from grid.check.parity import TOLERANCE, check_all
from grid.cliargs import StrictParser, parse
from grid.env import provenance
from grid.textable import table

# Lazy here: torch (heavy: never at import time on the driver); os (one code path)

BAD = {"FAIL", "ERROR"}


def parity_main(argv: list[str]) -> int:
    p = StrictParser(prog="python -m grid check parity",
                                description="fused (fla) vs reference (PyTorch) outputs and gradients on this GPU")
    p.add_argument("--mixers", nargs="*", help="registry names (default: every entry with a fused backend)")
    p.add_argument("--dtypes", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--shapes", nargs="*", help="BxTxD, e.g. 2x100x256 (default: 2x64x256 2x100x256 1x1000x256)")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu runs fla kernels in Triton's interpreter")
    p.add_argument("--allow-refused", action="store_true", help="exit 0 even if fla refuses a kernel here")
    p.add_argument("--autotune", choices=["first", "full"], default="first",
                   help="first (default): each fla kernel runs the first config that compiles (the math does not "
                        "depend on it; one compile per kernel instead of dozens); full: every candidate, as training "
                        "picks (see grid/models/autotune.py)")
    p.add_argument("--json", help="also write the rows as JSON to this file")
    p.add_argument("--markdown", action="store_true")
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    import os  # noqa: PLC0415

    os.environ["LINGRID_AUTOTUNE"] = args.autotune  # read by grid.models.autotune (and recorded)
    if args.device == "cpu":
        interpret.enable()
    elif args.device == "cuda":
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():
            print("error: no CUDA GPU visible; parity is a GPU check (use --device cpu for a tiny interpreter run)",
                  file=sys.stderr)
            return 2

    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes] if args.shapes else None
    def stream(new_rows):  # one line per row as it is measured (and JSON lines, if asked)
        for r in new_rows:
            print(f"[parity] {r.mixer} {r.dtype} {r.shape}: {r.status} out={r.out_err} dx={r.dx_err} "
                  f"dW={r.dw_err} {r.detail}", file=sys.stderr, flush=True)
            if args.json:
                with open(args.json + "l", "a") as fh:
                    fh.write(json.dumps(r.as_dict()) + "\n")

    rows = check_all(args.mixers, shapes, tuple(args.dtypes), args.device,
                     progress=lambda m: print(m, file=sys.stderr, flush=True), on_rows=stream)
    prov = provenance()
    print(f"device={prov['gpu_name'] or args.device} torch={prov['torch']} triton={prov['triton']} fla={prov['fla']} "
          f"autotune={args.autotune} tolerances={TOLERANCE}")
    print(table(["mixer", "dtype", "shape", "status", "out", "dx", "dW (worst)", "worst weight", "detail"],
                [[r.mixer, r.dtype, r.shape, r.status, r.out_err, r.dx_err, r.dw_err, r.worst_weight, r.detail]
                 for r in rows], markdown=args.markdown))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"provenance": prov, "tolerance": TOLERANCE, "rows": [r.as_dict() for r in rows]}, fh, indent=1)
    bad = BAD | (set() if args.allow_refused else {"REFUSED"})
    failed = sorted({r.mixer for r in rows if r.status in bad})
    if failed:
        print(f"parity: {len(failed)} mixer(s) not usable here: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "parity":
        print("usage: python -m grid check parity [--mixers ...] [--dtypes fp32 bf16] [--json OUT]", file=sys.stderr)
        return 2
    return parity_main(argv[1:])
