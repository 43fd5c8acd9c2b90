"""Environment and provenance: what this process runs on, in one room.

* `versions`: installed package versions and the one version parser (packaging's);
* `provenance`: what ran (versions, GPU, git sha), recorded in every row;
* `profiles`: environment profiles (configs/env/*.txt), pinned package sets checked on every worker;
* `kernels`: whether a fused (fla/Triton) kernel can run here, decided before any kernel runs.

Nothing here imports fla or triton; torch only inside the functions that ask the GPU.
"""
from __future__ import annotations

from grid.env.provenance import git_sha, provenance
from grid.env.versions import fla_version, package_version, version_tuple

__all__ = ["fla_version", "git_sha", "package_version", "provenance", "version_tuple"]
