"""Shared test setup.

On a machine without a GPU, fla's Triton kernels run through Triton's CPU interpreter so that
reference-vs-fused parity is checked in CI at tiny shapes (grid/check/interpret.py).
"""
import os
import tempfile

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# the parity gate caches its checks per host; tests keep theirs out of the user's ~/.cache
os.environ.setdefault("LINGRID_PARITY_CACHE", tempfile.mkdtemp(prefix="lingrid-parity-"))

try:
    import torch

    _cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _cuda = False

if not _cuda:
    from grid.check import interpret

    interpret.enable()

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if _cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
