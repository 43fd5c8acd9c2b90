"""How close does each fused linear mixer get, inside the LM, to what its mixer benchmark allows?

Estimate (docs/gpu.md, issue: >= 80 %): the transformer's time per token in the LM minus its
n_layers attention layers at benchmark speed is the non-mixer cost (FFN, norms, head, optimizer);
a mixer's "allowed" tokens/s is 1 / (non-mixer cost + n_layers / mixer benchmark tokens/s). Only
an estimate when the benchmark's d_model or tokens per step differ from the LM's.

    python scripts/lm_vs_mixer_bench.py LM_ROWS.csv BENCH.json [BENCH.json ...] [--seq-len 2048] [--n-layers 12]
"""
from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))  # find `grid` from anywhere
from grid.cliargs import StrictParser  # noqa: E402  (one-line errors, no abbreviations)


def allowed(lm: pd.DataFrame, bench: dict[str, float], n_layers: int) -> pd.DataFrame:
    """Rows per non-attention mixer: measured and allowed tokens/s and their ratio."""
    tr = lm[(lm.mixer == "attention") & (~lm.compiled.astype(bool))]
    if tr.empty or "attention" not in bench:
        raise ValueError("need an eager transformer row in the LM rows and an attention row in the benchmark")
    rest = 1 / float(tr.tokens_per_s.iloc[0]) - n_layers / bench["attention"]
    rows = []
    for _, r in lm[(lm.mixer != "attention") & (~lm.compiled.astype(bool))].iterrows():
        if r.mixer not in bench:
            continue
        ok = 1 / (rest + n_layers / bench[r.mixer])
        rows.append({"mixer": r.mixer, "lm_tokens_per_s": r.tokens_per_s, "allowed_tokens_per_s": ok,
                     "ratio": r.tokens_per_s / ok})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lm_rows", help="CSV of LM trial rows (columns mixer, compiled, tokens_per_s)")
    p.add_argument("bench", nargs="+", help="`grid bench mixers --json` outputs")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--n-layers", type=int, default=12)
    args = p.parse_args(argv)
    bench = {r["mixer"]: r["tokens_per_s"] for f in args.bench for r in json.load(open(f))["rows"]
             if r["seq_len"] == args.seq_len and r["status"] == "ok"}
    print(allowed(pd.read_csv(args.lm_rows), bench, args.n_layers).to_string(index=False, float_format="%.3g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
