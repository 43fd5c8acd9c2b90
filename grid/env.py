"""Provenance: what actually ran (versions, GPU, git sha). Never imports fla or triton at module top level."""
from __future__ import annotations

import functools
import importlib.metadata as md
import os
import subprocess
from pathlib import Path


def package_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("LINGRID_GIT_SHA")
    sha = out.stdout.strip()
    if out.returncode != 0 or len(sha) != 40:  # not a checkout (e.g. a copied tree on a worker)
        return os.environ.get("LINGRID_GIT_SHA")
    return sha


def provenance() -> dict[str, str | None]:
    """Versions and hardware of *this* process (call it inside the trial, on the worker)."""
    import torch  # noqa: PLC0415  (torch is cheap and CPU-safe; fla/triton are only read as metadata)

    cuda = torch.version.cuda if torch.cuda.is_available() else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "fla": package_version("fla-core") or package_version("flash-linear-attention"),
        "ray": package_version("ray"),
        "cuda": cuda,
        "gpu_name": gpu,
        "git_sha": git_sha(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "autotune": os.environ.get("LINGRID_AUTOTUNE", "full"),  # grid.models.autotune: first | full
    }
