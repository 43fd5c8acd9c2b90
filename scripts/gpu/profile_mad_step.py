"""What does one MAD training step cost the GPU, setting by setting? The trial's own model, alone on the GPU.

For each named setting ("CR seq_len=1024", "C baseline", ...): builds the run exactly as a MAD trial
does (evals.mad.protocol._setup: the setting's data, generated if missing, and the architecture's
layer settings; fused backend, `--compile on` as the measured suite), then on one batch of 128 of
its training examples measures, with graphed steps:
- wall ms per step, alone on the GPU (host-bound where it exceeds the GPU time);
- GPU kernel ms per step (torch.profiler, summed: the GPU's busy time, i.e. what the step takes from
  the other runs when many share the GPU), by kernel class and the top kernels;
- both relative to the task's baseline where it is among the settings.

    python scripts/gpu/profile_mad_step.py --arch gla --settings "CR baseline" "CR seq_len=1024" \
        [--compile on|off] [--top N] [--inductor max_autotune=True ...] [--json OUT]

`--inductor KEY=VALUE` sets torch._inductor.config.KEY before compiling (an experiment: the MAD
runs themselves use Inductor's defaults); the report records the options.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere: find `grid`
from grid.cliargs import StrictParser  # noqa: E402  (one-line errors, no abbreviations)

from grid.paths import data_root  # noqa: E402
from scripts.gpu.check_cuda_graph import kernel_ms_per_step, ms_per_step, top_kernels  # noqa: E402
from scripts.gpu.profile_lm_step import kernel_class  # noqa: E402


def find_settings(names: list[str]) -> list:
    """'TASK setting_id' -> MADSetting, with the valid names in the error."""
    from evals.mad.settings import all_settings

    known = {f"{s.code} {s.setting_id}": s for s in all_settings()}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no such setting: {', '.join(unknown)}; e.g. {', '.join(list(known)[:4])} ...")
    return [known[n] for n in names]


def parse_inductor_options(items: list[str]) -> dict:
    """['max_autotune=True', 'coordinate_descent_tuning=1'] -> {...}, values as Python literals."""
    import ast

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--inductor {item!r}: expected KEY=VALUE")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def apply_inductor_options(options: dict) -> None:
    import torch._inductor.config as cfg

    for key, value in options.items():
        target = cfg
        *path, last = key.split(".")
        for part in path + [last]:  # every part must exist: a typo must not become a new, unused option
            if not hasattr(target, part):
                raise ValueError(f"torch._inductor.config has no option {key!r}")
            if part != last:
                target = getattr(target, part)
        setattr(target, last, value)


def profile_setting(arch: str, setting, compile: bool, data_root: str, steps: int, top: int = 10) -> dict:
    import torch

    from evals.mad.backbones import build_backbone
    from evals.mad.protocol import MADRunConfig, _setup
    from grid.models.compile import compile_model

    cfg = MADRunConfig(setting=setting.model_dump(), arch=arch, backend="fused", data_root=data_root,
                       compile=compile)
    dev = torch.device("cuda")
    _, mcfg, (xtr, ytr), _ = _setup(cfg, setting, dev)
    batch = (xtr[:cfg.batch_size].contiguous(), ytr[:cfg.batch_size].contiguous())

    def make_model():  # as _setup builds it, without reloading the data
        model = build_backbone(mcfg, setting.code, int(xtr.shape[1])).to(dev)
        if compile:
            compile_model(model)
        return model

    wall = ms_per_step(make_model, batch, True, steps=steps)
    per, n_kernels = kernel_ms_per_step(make_model, batch, True, steps=min(steps, 50))
    by_class: dict[str, float] = {}
    for name, ms in per.items():
        by_class[kernel_class(name)] = by_class.get(kernel_class(name), 0.0) + ms
    return {"setting": f"{setting.code} {setting.setting_id}", "task": setting.code, "seq_len": setting.seq_len,
            "vocab_size": setting.vocab_size, "input_width": int(xtr.shape[1]), "compile": compile,
            "ms_per_step_alone": wall, "gpu_kernel_ms_per_step": sum(per.values()), "kernels_per_step": n_kernels,
            "gpu_ms_by_class": {k: round(v, 4) for k, v in sorted(by_class.items(), key=lambda kv: -kv[1])},
            "top_kernels_ms_per_step": top_kernels(per, top)}


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="gla")
    p.add_argument("--settings", nargs="+", required=True, metavar="'TASK SETTING_ID'")
    p.add_argument("--compile", choices=("on", "off"), default="on")
    p.add_argument("--data-path", default=data_root())
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--top", type=int, default=10, help="how many of the largest kernels to list per setting")
    p.add_argument("--inductor", nargs="*", default=[], metavar="KEY=VALUE",
                   help="torch._inductor.config options to set before compiling (recorded)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    try:
        settings = find_settings(args.settings)
        inductor = parse_inductor_options(args.inductor)
    except ValueError as exc:
        p.error(str(exc))
    import torch

    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    from grid.env import provenance

    apply_inductor_options(inductor)
    rows: list[dict] = []
    for s in settings:
        try:
            rows.append(profile_setting(args.arch, s, args.compile == "on", args.data_path, args.steps, args.top))
        except Exception as exc:  # noqa: BLE001 - one setting's failure is a row, not the end of the run
            rows.append({"setting": f"{s.code} {s.setting_id}", "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        print(json.dumps(rows[-1]), flush=True)
        if args.json:  # after every setting: a killed run keeps what it measured
            Path(args.json).write_text(json.dumps({"arch": args.arch, "provenance": provenance(), "inductor": inductor,
                                                  "rows": rows},
                                                  indent=1))
    base = {r["task"]: r for r in rows if r.get("setting", "").endswith(" baseline") and "error" not in r}
    print(f"\narch={args.arch} compile={args.compile} inductor={inductor or 'defaults'}, graphed steps, one run alone on the GPU")
    print("setting                    T  wall ms/step  GPU ms/step  GPU ms vs task baseline  largest class")
    for r in rows:
        if "error" in r:
            print(f"{r['setting']:<24} error: {r['error']}")
            continue
        b = base.get(r["task"])
        rel = f"{r['gpu_kernel_ms_per_step'] / b['gpu_kernel_ms_per_step']:.2f}x" if b else "-"
        cls, ms = next(iter(r["gpu_ms_by_class"].items()))
        print(f"{r['setting']:<24} {r['seq_len']:>5}  {r['ms_per_step_alone']:>12.2f}  {r['gpu_kernel_ms_per_step']:>11.2f}"
              f"  {rel:>23}  {cls} {ms:.2f} ms")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
