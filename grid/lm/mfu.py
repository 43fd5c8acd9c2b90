"""Model FLOP utilisation: achieved training FLOP/s over the GPU's peak dense bf16 FLOP/s.

    mfu = train_flops_per_token (grid.models.accounting, 3 x forward) x tokens/s / (peak x n_gpus)

Peaks are the vendor's dense (no sparsity) bf16 tensor-core numbers, matched on the CUDA device
name. Unknown GPUs and CPUs give None (no guessed denominator): the row still has tokens/s.
"""
from __future__ import annotations

# Lazy here: torch (heavy: never at import time on the driver)

# (substrings that must all appear in the upper-cased device name, peak FLOP/s); first match wins
PEAK_BF16_FLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("H100", "PCIE"), 756e12),   # H100 PCIe
    (("H100", "NVL"), 835e12),    # H100 NVL
    (("H100",), 989e12),          # H100 SXM
    (("H200",), 989e12),          # H200 SXM (same tensor cores as H100 SXM)
    (("GH200",), 989e12),
    (("A100",), 312e12),          # A100 SXM and PCIe
)


def peak_bf16_flops(gpu_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of one GPU by its CUDA name (e.g. 'NVIDIA H100 80GB HBM3'); None if unknown/CPU."""
    if not gpu_name:
        return None
    name = gpu_name.upper()
    for needles, peak in PEAK_BF16_FLOPS:
        if all(n in name for n in needles):
            return peak
    return None


def mfu(train_flops_per_token: float | None, tokens_per_s: float | None, gpu_name: str | None,
        n_gpus: int = 1) -> float | None:
    """Model FLOP utilisation in [0, 1] (None on CPU, unknown GPUs or missing inputs)."""
    peak = peak_bf16_flops(gpu_name)
    if peak is None or not train_flops_per_token or not tokens_per_s or n_gpus < 1:
        return None
    return float(train_flops_per_token) * float(tokens_per_s) / (peak * n_gpus)


def current_gpu_name() -> str | None:
    """CUDA name of this process's device 0, or None without a GPU."""
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(torch.cuda.current_device())
