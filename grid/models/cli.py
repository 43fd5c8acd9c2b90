"""`python -m grid models [list | describe CONFIG.yaml | size CONFIG.yaml --target N]`."""
from __future__ import annotations

import argparse
import sys

from grid.cliargs import StrictParser, float_range, parse
from grid.models.accounting import account
from grid.models.config import load_model_config
from grid.models.registry import all_mixers, fused_status, reference_status
from grid.models.sizing import SizingError, size_to_target
from grid.models.stack import build_for_counting
from grid.textable import table

# Lazy here: textwrap (one code path)


def _list(_args) -> int:
    """The registry: which backends exist, which one `backend: auto` takes here, and why not the others
    (reasons as numbered notes under the table, so the table fits ~100 columns)."""
    import textwrap  # noqa: PLC0415

    rows, notes = [], {}

    def note(text: str) -> str:
        return f"[{notes.setdefault(text, len(notes) + 1)}]"

    for spec in all_mixers():
        f_ok, f_why = fused_status(spec)
        r_ok, r_why = reference_status(spec)
        auto = "fused" if f_ok else "reference" if r_ok else "-"
        why = ([f"fused {note(f_why)}"] if not f_ok else []) + ([f"reference {note(r_why)}"] if not r_ok else [])
        rows.append([spec.name, spec.family, "yes" if f_ok else "no", "yes" if r_ok else "no", auto,
                     ", ".join(why)])
    print(table(["mixer", "family", "fused here", "reference", "auto runs", "why not"], rows))
    if notes:
        print()
        for text, i in notes.items():
            print(textwrap.fill(text, width=100, initial_indent=f"[{i}] ", subsequent_indent=" " * (len(str(i)) + 3)))
    stuck = [r[0] for r in rows if r[4] == "-"]
    if stuck:
        print()
        print(textwrap.fill(f"Cannot run on this machine (no fused backend here and no plain-PyTorch reference): "
                            f"{', '.join(stuck)}.", width=100))
    print("\nbackend: auto takes fused where it can run, else the reference.\n"
          "python -m grid models describe CONFIG.yaml: the layers and counts of one model.")
    return 0


def _describe(args) -> int:
    cfg = load_model_config(args.config)
    acc = account(build_for_counting(cfg))
    print(f"mixer={cfg.mixer} d_model={cfg.d_model} n_layers={cfg.n_layers} vocab={cfg.vocab_size} "
          f"hybrid={cfg.hybrid!r} (nominal {acc.nominal_ratio}, effective {acc.effective_ratio}, "
          f"attention layers {acc.attention_layers})")
    rows = [[r.index, r.mixer, r.mixer_params, r.ffn_params, r.state, r.fwd_flops_per_token] for r in acc.layers]
    print(table(["layer", "mixer", "mixer params", "ffn params", f"state @{cfg.context}", "fwd FLOPs/token"], rows))
    s = acc.summary()
    keys = ["total_params", "embedding_params", "head_params", "non_embedding_params", "mixer_params",
            "attention_params", "ffn_params", "norm_params", "state_size", "fwd_flops_per_token",
            "train_flops_per_token"]
    print()
    print(table(["quantity", "value"], [[k, s[k]] for k in keys]))
    print("per-mixer params: " + ", ".join(f"{k}={v:,}" for k, v in acc.per_mixer_params.items()))
    return 0


def _size(args) -> int:
    cfg = load_model_config(args.config)
    try:
        res = size_to_target(cfg, int(float(args.target)), tolerance=args.tolerance, vary_depth=args.vary_depth)
    except SizingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(res.report())
    return 0


def main(argv: list[str]) -> int:
    p = StrictParser(prog="python -m grid models", description="the mixer registry and model accounting")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("list", help="registry entries and the backends available on this machine")
    d = sub.add_parser("describe", help="layer table and parameter/state/FLOP counts of a model config")
    d.add_argument("config")
    s = sub.add_parser("size", help="pick mixer knobs to match a target non-embedding parameter count")
    s.add_argument("config")
    s.add_argument("--target", required=True, type=float_range(1), help="non-embedding parameters, e.g. 3.08e8")
    s.add_argument("--tolerance", type=float_range(0, 1, lo_open=True), default=0.02)
    s.add_argument("--vary-depth", action="store_true")
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    try:
        return {"describe": _describe, "size": _size}.get(args.cmd, _list)(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
