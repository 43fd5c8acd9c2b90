"""Provenance: what actually ran (versions, GPU, git sha), recorded in every row.

Lazy here: torch (read inside `provenance`, which runs on the worker; the driver imports this module)."""
from __future__ import annotations

import functools
import os
import subprocess

from grid.env.versions import fla_version, package_version
from grid.paths import REPO

# Lazy here: torch (heavy: never at import time on the driver)


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("LINGRID_GIT_SHA")
    sha = out.stdout.strip()
    if out.returncode != 0 or len(sha) != 40:  # not a checkout (e.g. a copied tree on a worker)
        return os.environ.get("LINGRID_GIT_SHA")
    return sha


def provenance() -> dict[str, str | None]:
    """Versions and hardware of *this* process (call it inside the trial, on the worker)."""
    import torch  # noqa: PLC0415

    cuda = torch.version.cuda if torch.cuda.is_available() else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "fla": fla_version(),
        "ray": package_version("ray"),
        "cuda": cuda,
        "gpu_name": gpu,
        "git_sha": git_sha(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "autotune": os.environ.get("LINGRID_AUTOTUNE", "full"),  # grid.models.autotune: first | full
    }


__all__ = ["git_sha", "provenance"]
