"""Do batched MAD runs (evals/mad/batched.py: one member-stacked model for a setting's lr x wd runs)
train what solo runs train, and how much faster are they than packs?

For each architecture and each task's baseline setting, without Ray:
1. correctness: the runs `--compare` (indices into the 6 (lr, wd) runs) trained solo twice, with CUDA
   graphs on and off (two executions of one run that round differently: the noise floor), and as
   members of the batched group of all 6 runs; per run, the largest relative difference of the
   epoch test losses (the curve) and of the final test loss, and the final accuracies;
2. speed: the 6 runs as one batched model and as one pack (threads, grid/run/pack.py), each twice
   (the first pass compiles kernels; the second is the steady state): wall times and the speed-up.
Early stopping is off (stop_acc 2), so both modes do the same work. Writes one JSON object per
(arch, task) to `--json` as it goes (a list), and prints each.

    python scripts/gpu/check_batched_mad.py --json OUT [--arch gla deltanet] [--tasks CR C] [--epochs 2]

On a CPU (`--backend reference --max-train-examples 64 --epochs 1`) it runs the same code slowly
(tests/test_gpu_scripts.py does so).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere: find `grid`

from grid.cliargs import StrictParser, int_range  # noqa: E402  (one-line errors, no abbreviations)
from grid.paths import data_root  # noqa: E402


class Curve:
    """A trial context that keeps every epoch report."""

    def __init__(self):
        self.reports: list[dict] = []

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append(dict(metrics))

    def losses(self) -> list[float]:
        return [r["test_loss"] for r in self.reports]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _curve_rel(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        return float("inf")
    return max((_rel(x, y) for x, y in zip(a, b)), default=0.0)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def check(arch: str, setting, args) -> dict:
    from evals.mad.batched import run_mad_group
    from evals.mad.protocol import MADRunConfig, run_mad
    from evals.mad.run import LRS, WDS
    from grid.run.pack import make_pack, run_members
    from grid.run.spec import make_trial

    base = dict(setting=setting.model_dump(), arch=arch, backend=args.backend, epochs=args.epochs, stop_acc=2.0,
                data_root=str(Path(args.data_path).resolve()), max_train_examples=args.max_train_examples,
                device=args.device)
    configs = [MADRunConfig(**base, lr=lr, weight_decay=wd).model_dump(mode="json") for lr in LRS for wd in WDS]
    out: dict = {"arch": arch, "task": setting.code, "setting": setting.setting_id, "runs": len(configs),
                 "epochs": args.epochs, "compare": args.compare}

    # 1. correctness (the batched pass here is also the speed test's first, cold pass)
    curves = [Curve() for _ in configs]
    batched, out["batched_wall_s_cold"] = _timed(lambda: run_mad_group(configs, curves))
    solo_on = {i: (Curve(), None) for i in args.compare}
    solo_off = {i: (Curve(), None) for i in args.compare}
    for i in args.compare:
        solo_on[i] = (solo_on[i][0], run_mad(configs[i], solo_on[i][0]))
        solo_off[i] = (solo_off[i][0], run_mad({**configs[i], "cuda_graph": False}, solo_off[i][0]))
    out["members"] = []
    for i in args.compare:
        (c_on, r_on), (c_off, r_off) = solo_on[i], solo_off[i]
        out["members"].append({
            "lr": configs[i]["lr"], "wd": configs[i]["weight_decay"],
            "batched_vs_solo_curve_rel": _curve_rel(curves[i].losses(), c_on.losses()),
            "noise_curve_rel": _curve_rel(c_off.losses(), c_on.losses()),
            "batched_vs_solo_final_loss_rel": _rel(batched[i]["loss"], r_on["loss"]),
            "noise_final_loss_rel": _rel(r_off["loss"], r_on["loss"]),
            "acc": {"batched": batched[i]["acc"], "solo": r_on["acc"], "solo_no_graph": r_off["acc"]},
            "curves": {"batched": curves[i].losses(), "solo": c_on.losses(), "solo_no_graph": c_off.losses()},
        })
    out["batched_status"] = [r["status"] for r in batched]
    out["batched_backend"] = batched[0]["backend"]
    out["batched_graph_replays"] = batched[0]["cuda_graph_replays"]
    out["batched_graph_fallback"] = batched[0]["cuda_graph_fallback"]
    out["batched_eval_graph_fallback"] = batched[0]["eval_graph_fallback"]

    # 2. speed: warm batched pass, then a pack of the same six runs, cold and warm
    _, out["batched_wall_s"] = _timed(lambda: run_mad_group(configs))

    def pack():
        return run_members(make_pack([make_trial(c, suite="mad", grid="check", trainable="evals.mad.protocol:run_mad")
                                      for c in configs]), {})

    _, out["pack_wall_s_cold"] = _timed(pack)
    rows, out["pack_wall_s"] = _timed(pack)
    out["pack_status"] = [r["status"] for r in rows]
    out["pack_errors"] = [r["error"][-400:] for r in rows if r.get("error")]
    out["speedup_vs_pack"] = out["pack_wall_s"] / out["batched_wall_s"]
    out["max_batched_vs_solo_curve_rel"] = max(m["batched_vs_solo_curve_rel"] for m in out["members"])
    out["max_noise_curve_rel"] = max(m["noise_curve_rel"] for m in out["members"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True, help="write the results (a JSON list) here")
    p.add_argument("--arch", nargs="+", default=["gla", "deltanet"])
    p.add_argument("--tasks", nargs="+", default=["CR", "C"], help="task codes; each task's baseline setting")
    p.add_argument("--epochs", type=int_range(1), default=2)
    p.add_argument("--compare", type=int_range(0, 5), nargs="+", default=[0, 3],
                   help="which of the 6 (lr, wd) runs to compare with their solo runs (lrs x wds order)")
    p.add_argument("--backend", choices=("auto", "fused", "reference"), default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-train-examples", type=int_range(1), default=None, help="smoke runs (CPU)")
    p.add_argument("--autotune", choices=("first", "full"), default="first",
                   help="fla kernel configs (grid/models/autotune.py): first = no autotuning, minutes less compile")
    p.add_argument("--data-path", default=data_root())
    args = p.parse_args(argv)
    os.environ["LINGRID_AUTOTUNE"] = args.autotune

    from evals.mad.data import ensure_all
    from evals.mad.settings import all_settings

    settings = all_settings(args.tasks, which="baseline")
    ensure_all(settings, args.data_path, jobs=4, log=lambda m: print(m, flush=True))
    results = []
    for arch in args.arch:
        for s in settings:
            t0 = time.perf_counter()
            try:
                row = check(arch, s, args)
            except Exception as exc:  # noqa: BLE001 - one architecture's failure must not lose the others
                import traceback

                row = {"arch": arch, "task": s.code, "error": "".join(traceback.format_exception(exc))[-3000:]}
            row["check_wall_s"] = time.perf_counter() - t0
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "members"}), flush=True)
            Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
