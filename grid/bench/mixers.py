"""Forward+backward throughput and peak memory of one mixer layer (fused backend), on the GPU.

Setup per the issue: d_model 1024, sequence lengths 2048 and 8192, 16k tokens per step
(batch = tokens // T), bf16 autocast, fp32 weights. Timed with CUDA events after warm-up steps
(the first steps compile and autotune fla's kernels). tokens/s = tokens per step / step time.
"""
from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass

# Lazy here: torch (heavy: never at import time on the driver); grid.models, grid.models.mixers._common,
#   grid.models.registry (they import torch or Ray)


@dataclass
class BenchRow:
    mixer: str
    seq_len: int
    batch: int
    tokens_per_s: float | None
    ms_per_step: float | None
    peak_mem_gib: float | None
    params: int | None
    backend: str
    status: str
    detail: str = ""
    autotune: str = "full"  # Triton's kernel-config choice: full (tuned) or first (untuned, a lower bound)

    def as_dict(self) -> dict:
        return asdict(self)


def bench_mixer(name: str, d_model: int = 1024, seq_len: int = 2048, tokens: int = 16384, warmup: int = 3,
                iters: int = 10, backend: str = "fused", kwargs: dict | None = None) -> BenchRow:
    import torch  # noqa: PLC0415

    from grid.models import autotune as policy  # noqa: PLC0415
    from grid.models.mixers._common import first  # noqa: PLC0415
    from grid.models.registry import build_mixer, get_mixer  # noqa: PLC0415

    spec = get_mixer(name)
    autotune = policy.mode()  # build_mixer installs it from LINGRID_AUTOTUNE; the row says which it was
    batch = max(1, tokens // seq_len)
    try:
        layer = build_mixer(spec, d_model, 0, spec.resolve_kwargs(kwargs), backend).cuda()
    except Exception as exc:  # noqa: BLE001
        return BenchRow(name, seq_len, batch, None, None, None, None, backend, "UNAVAILABLE", str(exc)[:300],
                        autotune)
    params = sum(p.numel() for p in layer.parameters())
    x = torch.randn(batch, seq_len, d_model, device="cuda", requires_grad=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = first(layer(x))
        out.float().pow(2).mean().backward()

    try:
        for _ in range(warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001
        msg = traceback.format_exception_only(exc)[-1].strip()[:300]
        return BenchRow(name, seq_len, batch, None, None, None, params, backend, "ERROR", msg, autotune)
    ms = start.elapsed_time(end) / iters
    peak = torch.cuda.max_memory_allocated() / 2**30
    layer = x = None  # free the GPU memory before the next mixer
    torch.cuda.empty_cache()
    return BenchRow(name, seq_len, batch, batch * seq_len / (ms / 1e3), ms, peak, params, backend, "ok", "", autotune)
