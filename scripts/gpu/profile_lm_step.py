"""Where does an LM training step spend its GPU time? Profiles the trainer's own step on random tokens.

For each architecture of a grid YAML (at its first scale), builds the model exactly as the LM trial
does (grid.lm.gridspec.model_for, bf16 autocast, fused AdamW, clipping 1.0, gradient accumulation
down to the recipe's micro-batch), runs `--warmup` optimizer steps (compile, autotune), times
`--steps` more (ms per step, tokens/s and MFU with grid.models.accounting's FLOPs), and profiles one
further step with torch.profiler: GPU time per kernel class (GEMM, attention, Triton/fused,
elementwise, optimizer, other) and the top kernels. Variants:

    --compile none|model|step    none: eager; model: model.compile() as recipe.compile does;
                                 step: torch.compile over model + loss (the cross-entropy fused too)
    --micro-batch N              micro-batch rows (default: the recipe's)

    python scripts/gpu/profile_lm_step.py configs/grids/throughput-350m-compile.yaml \
        [--compile step] [--json OUT] [--top 25]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere: find `grid`
from grid.cliargs import StrictParser  # noqa: E402  (one-line errors, no abbreviations)

CLASSES = (  # first match wins, on the lower-cased kernel name
    ("communication", ("nccl",)),
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient_attention")),
    ("gemm", ("gemm", "cutlass", "sm90_xmma", "ampere_bf16", "cublas", "nvjet", "matmul")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("triton/fused", ("triton",)),
    ("elementwise", ("elementwise", "vectorized", "reduce", "copy", "fill", "cat", "index")),
)


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, needles in CLASSES:
        if any(n in low for n in needles):
            return cls
    return "other"


def profile_arch(trial, recipe: dict, args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from grid.lm.mfu import current_gpu_name, mfu
    from grid.lm.trial import lm_loss
    from grid.models import build_model
    from grid.models.accounting import account
    from grid.train import build_adamw
    from grid.train.loop import optimizer_step

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(trial.model).to(dev)
    fpt = float(account(model).summary()["train_flops_per_token"])
    loss_fn = lm_loss
    if args.compile == "model":
        model.compile()
    elif args.compile == "step":
        loss_fn = torch.compile(lm_loss)
    opt = build_adamw(model, 3e-4, 0.1, no_decay=True, betas=(0.9, 0.95))
    batch, seq = int(trial.train["batch_size"]), int(trial.train["seq_len"])
    micro = args.micro_batch or int(trial.train["micro_batch_size"])
    accum = batch // micro
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(0, trial.model.vocab_size, (batch, seq + 1), generator=gen).to(dev)
    inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()

    def step():
        return optimizer_step(model, opt, loss_fn, inp, tgt, grad_accum=accum, grad_clip=1.0, device=dev,
                              precision="bf16")

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss.item()
    ms = (time.perf_counter() - t0) / args.steps * 1e3
    tps = batch * seq / (ms / 1e3)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    kernels: dict[str, float] = {}
    for ev in prof.key_averages():
        dt = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0.0)
        if dt and ev.key:
            kernels[ev.key] = kernels.get(ev.key, 0.0) + dt / 1e3  # ms
    gpu_ms = sum(kernels.values())
    by_class: dict[str, float] = {}
    for k, v in kernels.items():
        by_class[kernel_class(k)] = by_class.get(kernel_class(k), 0.0) + v
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[: args.top]
    return {"arch": trial.arch, "scale": trial.scale, "compile": args.compile, "micro_batch": micro, "grad_accum": accum,
            "ms_per_step": ms, "tokens_per_s": tps, "mfu": mfu(fpt, tps, current_gpu_name()),
            "train_flops_per_token": fpt, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "profiled_gpu_ms": gpu_ms, "gpu_busy_fraction": gpu_ms / ms,
            "ms_by_class": dict(sorted(by_class.items(), key=lambda kv: -kv[1])),
            "top_kernels_ms": [[k[:120], v] for k, v in top], "gpu": current_gpu_name(),
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    p = StrictParser(description=__doc__.splitlines()[0])
    p.add_argument("grid")
    p.add_argument("--compile", choices=("none", "model", "step"), default=None,
                   help="default: model if the recipe compiles, else none")
    p.add_argument("--micro-batch", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--archs", nargs="*", default=None, help="architecture names of the grid (default: all)")
    p.add_argument("--vocab", type=int, default=4096, help="vocabulary (the data's; 4096 = configs/data/stdlib-bpe)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    from grid.lm.gridspec import expand, load_grid

    spec = load_grid(args.grid)
    args.compile = args.compile or ("model" if spec.recipe.compile else "none")
    torch.set_float32_matmul_precision("high")
    out = []
    for t in expand(spec, args.vocab, "profile", count=False):
        if args.archs and t.arch not in args.archs:
            continue
        r = profile_arch(t, spec.recipe.model_dump(), args)
        out.append(r)
        print(f"\n{r['arch']} {r['scale']} compile={r['compile']} micro={r['micro_batch']}x{r['grad_accum']}: "
              f"{r['ms_per_step']:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, MFU "
              f"{100 * (r['mfu'] or 0):.1f}%, peak {r['peak_mem_gib']:.1f} GiB, GPU busy "
              f"{100 * r['gpu_busy_fraction']:.0f}%")
        print("  " + ", ".join(f"{k} {v:.1f} ms" for k, v in r["ms_by_class"].items()))
        for name, ms in r["top_kernels_ms"]:
            print(f"  {ms:8.2f} ms  {name}")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
