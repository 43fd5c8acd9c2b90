"""Run fla's Triton kernels on a CPU through Triton's interpreter (TRITON_INTERPRET=1).

This lets CPU-only CI compare our reference mixers with the real fused layers at tiny shapes.
It must be enabled before fla (or any module defining Triton kernels) is imported. Autotuning
needs a GPU driver to time configs, so in interpreter mode every config gets the same fake time
and the first one is used. Not every fla kernel runs in the interpreter; callers treat a failure
as "unavailable in the interpreter", never as a parity failure.
"""
from __future__ import annotations

import os
import sys


def enable() -> bool:
    """Turn the interpreter on for this process. Returns False if fla was imported already."""
    if any(m == "fla" or m.startswith("fla.") for m in sys.modules):
        return os.environ.get("TRITON_INTERPRET") == "1"
    os.environ["TRITON_INTERPRET"] = "1"
    import triton.runtime.autotuner as autotuner  # noqa: PLC0415

    autotuner.Autotuner._bench = lambda self, *args, config=None, **kw: [0.0, 0.0, 0.0]
    return True


def active() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"
