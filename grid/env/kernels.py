"""Can a fused (fla/Triton) kernel run here? Decided from versions and hardware, before any kernel runs.

fla 0.6 raises deep inside its backward pass when a gated chunked kernel meets a Hopper GPU with
triton 3.4-3.7.0 (those versions computed wrong gradients, fla issue #640). We detect that case up
front so that building a model for training fails with a message that names the fix.
"""
from __future__ import annotations

# Lazy here: torch (asked for the GPU's capability only when a fused kernel is considered).
import functools
import importlib.util

from grid.env.versions import fla_version, package_version, version_tuple


@functools.lru_cache(maxsize=1)
def cuda_capability() -> tuple[int, int] | None:
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(0)


def gated_bwd_blocked(triton_version: str | None, capability: tuple[int, int] | None, has_tilelang: bool) -> bool:
    """True where fla refuses its gated chunked backward (Hopper, 3.4 <= triton < 3.7.1, no tilelang)."""
    if capability is None or capability[0] != 9 or has_tilelang:
        return False
    tv = version_tuple(triton_version)
    return (3, 4) <= tv[:2] and tv < (3, 7, 1)


GATED_FIX = ("fla refuses its gated chunked backward on Hopper GPUs with triton {tv} (3.4-3.7.0 computed "
             "wrong gradients); fix: pip install 'triton>=3.7.1' (or pip install tilelang)")


def fused_ok(spec) -> tuple[bool, str]:
    """(ok, reason) for the fused backend of a registry entry on this machine."""
    if spec.fused_needs_fla and importlib.util.find_spec("fla") is None:
        return False, "fla is not installed (pip install flash-linear-attention)"
    if spec.fused_needs_cuda and cuda_capability() is None:
        return False, "no CUDA GPU visible (fla's Triton kernels need one)"
    missing = [m for m in spec.fused_requires if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"needs {', '.join(missing)} (pip install {' '.join(m.replace('_', '-') for m in missing)})"
    if spec.gated_chunk_bwd:
        tv = package_version("triton")
        if gated_bwd_blocked(tv, cuda_capability(), importlib.util.find_spec("tilelang") is not None):
            return False, GATED_FIX.format(tv=tv)
    if not spec.fused_needs_fla:
        return True, "torch"
    return True, "fla " + str(fla_version())


__all__ = ["GATED_FIX", "cuda_capability", "fused_ok", "gated_bwd_blocked"]
