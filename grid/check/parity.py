"""Fused (fla Triton) vs reference (plain PyTorch) parity for the mixer registry.

For each mixer: build the fused layer, copy its weights into the reference (strict load: same
names and shapes), run both on the same random input and compare the output and the gradients
w.r.t. the input and every weight. The reference always runs in fp32 (it is the oracle); the
fused layer runs in the dtype under test, so bf16 rows measure the kernel's bf16 error against
exact math. Relative error = ||fused - ref|| / ||ref|| (Frobenius), per tensor; a row reports
the output error, the input-gradient error and the worst weight-gradient error.
"""
from __future__ import annotations

import math
import traceback
from dataclasses import asdict, dataclass

from grid.check import interpret

# Lazy here: torch (heavy: never at import time on the driver); grid.models, grid.models.mixers._common,
#   grid.models.registry (they import torch or Ray); contextlib (one code path)

# documented tolerances (relative Frobenius error vs the fp32 reference)
TOLERANCE = {"fp32": 5e-3, "bf16": 5e-2}
# fp32 rows allow TF32-level error: fla's kernels use tl.dot, which runs TF32 on Hopper for fp32
DEFAULT_SHAPES = [(2, 64, 256), (2, 100, 256), (1, 1000, 256)]  # (batch, seq_len, d_model); 100, 1000 % 64 != 0


@dataclass
class ParityRow:
    mixer: str
    dtype: str
    shape: str
    status: str  # PASS | FAIL | REFUSED | ERROR | SMOKE-OK | NO-REFERENCE
    out_err: float | None = None
    dx_err: float | None = None
    dw_err: float | None = None
    worst_weight: str | None = None
    tolerance: float | None = None
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def rel_err(a, b) -> float:
    a, b = a.detach().float(), b.detach().float()
    denom = b.norm().item()
    diff = (a - b).norm().item()
    if denom == 0.0:
        return diff
    return diff / denom


def _dtype(name: str):
    import torch  # noqa: PLC0415

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def _run(module, x, dtype):
    """Forward + backward as training runs it: fp32 weights, bf16 through autocast."""
    import contextlib  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from grid.models.mixers._common import first  # noqa: PLC0415

    x = x.detach().clone().requires_grad_(True)
    amp = (torch.autocast(x.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    with interpret.fixes():  # no-op unless fla's kernels run in Triton's CPU interpreter
        with amp:
            out = first(module(x))
        # a fixed random projection of the output, so every output element gets a distinct gradient
        g = torch.Generator(device="cpu").manual_seed(1)
        w = torch.randn(out.shape, generator=g).to(out.device, torch.float32)
        (out.float() * w).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    return out.detach(), x.grad.detach(), grads


def check_mixer(name: str, shapes=None, dtypes=("fp32", "bf16"), device: str = "cuda",
                kwargs: dict | None = None, seed: int = 0) -> list[ParityRow]:
    import torch  # noqa: PLC0415

    from grid.models.registry import fused_status, get_mixer  # noqa: PLC0415

    from grid.models import autotune  # noqa: PLC0415

    spec = get_mixer(name)
    shapes = shapes or DEFAULT_SHAPES
    autotune.apply()  # LINGRID_AUTOTUNE=first (parity's default): one compile per kernel
    ok, reason = fused_status(spec)
    if not ok and device == "cuda":
        return [ParityRow(name, dt, "-", "REFUSED", detail=reason) for dt in dtypes]
    rows = []
    for B, T, D in shapes:
        kw = spec.resolve_kwargs(kwargs)
        torch.manual_seed(seed)
        try:
            fused = spec.fused(D, 0, kw).to(device)
        except Exception as exc:  # noqa: BLE001  (report every failure, never crash the table)
            rows += [ParityRow(name, dt, f"{B}x{T}x{D}", "ERROR", detail=f"build: {type(exc).__name__}: {exc}")
                     for dt in dtypes]
            continue
        ref = None
        if spec.reference is not None:
            ref = spec.reference(D, 0, kw).to(device)
            ref.load_state_dict(fused.state_dict(), strict=True)
        x = torch.randn(B, T, D, device=device)
        ref_res = _run(ref.float(), x, torch.float32) if ref is not None else None
        for dt in dtypes:
            shape = f"{B}x{T}x{D}"
            try:
                fused.zero_grad(set_to_none=True)
                f_out, f_dx, f_grads = _run(fused, x, _dtype(dt))
            except Exception as exc:  # noqa: BLE001
                msg = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
                # fla's own refusals (triton/Hopper pin, or a dtype a kernel does not support) vs real errors
                refused = "Triton >= 3.4.0 and < 3.7.1" in str(exc) or "does not support float32" in str(exc)
                status = "REFUSED" if refused else "ERROR"
                rows.append(ParityRow(name, dt, shape, status, detail=msg))
                continue
            finite = bool(torch.isfinite(f_out).all() and torch.isfinite(f_dx).all())
            if ref_res is None:
                rows.append(ParityRow(name, dt, shape, "NO-REFERENCE" if finite else "FAIL",
                                      detail="smoke test only (no reference); outputs and grads finite" if finite
                                      else "non-finite output or gradient"))
                continue
            r_out, r_dx, r_grads = ref_res
            dw = {n: rel_err(f_grads[n], r_grads[n]) for n in r_grads if n in f_grads}
            missing = sorted(set(r_grads) - set(f_grads))
            worst = max(dw, key=dw.get) if dw else None
            row = ParityRow(name, dt, shape, "PASS", rel_err(f_out, r_out), rel_err(f_dx, r_dx),
                            dw[worst] if worst else None, worst, TOLERANCE[dt])
            errs = [e for e in (row.out_err, row.dx_err, row.dw_err) if e is not None]
            if not finite or missing or any(math.isnan(e) or e > TOLERANCE[dt] for e in errs):
                row.status = "FAIL"
                row.detail = f"fused has no grad for {missing}" if missing else ("non-finite" if not finite else "")
            rows.append(row)
    return rows


def check_all(mixers=None, shapes=None, dtypes=("fp32", "bf16"), device="cuda", progress=print,
              on_rows=None) -> list[ParityRow]:
    """All mixers; `on_rows(rows)` sees each mixer's rows as soon as they exist (first kernel compiles and
    autotunes take minutes per mixer, so a long run must not keep everything until the end)."""
    from grid.models.registry import all_mixers  # noqa: PLC0415

    names = mixers or [s.name for s in all_mixers() if s.fused is not None]
    rows = []
    for name in names:
        progress(f"[parity] {name} ...")
        try:
            new = check_mixer(name, shapes, dtypes, device)
        except Exception as exc:  # noqa: BLE001
            new = [ParityRow(name, "-", "-", "ERROR", detail=traceback.format_exception_only(exc)[-1].strip())]
        rows += new
        if on_rows is not None:
            on_rows(new)
    return rows
