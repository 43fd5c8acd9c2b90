"""fla's Mamba layers (mamba.py, mamba2.py) without their silent slow path.

fla's `Mamba` and `Mamba2` run mamba_ssm's kernels when mamba_ssm and causal_conv1d are installed and
otherwise fall back, without a word, to a plain-torch path that is neither fused nor feasible at benchmark
sizes (mamba2.py's docstring has the measurement). `guarded_fla_class` subclasses such a layer so that on a
GPU it refuses with a BackendUnavailable naming the fix; on CPU (tests, Triton interpreter) it runs.

It lives here, not in one of the families, so that no family file imports a sibling family.
"""
from __future__ import annotations

import functools
import importlib
import sys

from grid.models.errors import BackendUnavailable

# lazy: fla is imported (importlib) only when a fused layer is built: the registry is read without fla/triton


@functools.lru_cache(maxsize=None)
def guarded_fla_class(module_name: str, class_name: str):
    """A subclass of an fla Mamba layer that refuses to run on a GPU without mamba_ssm's fast path.

    Same parameters and construction; only `forward` adds the check (fla would otherwise fall back to a
    plain-torch path silently).
    """
    mod = importlib.import_module(module_name)
    base = getattr(mod, class_name)

    def forward(self, hidden_states, *args, **kwargs):
        if hidden_states.is_cuda and not getattr(sys.modules[module_name], "is_fast_path_available", False):
            raise BackendUnavailable(
                f"fla's {class_name} has no fast path here: mamba_ssm (and causal_conv1d) are not installed, and "
                f"its plain-torch fallback is not a fused kernel (and does not fit in memory at benchmark sizes); "
                f"fix: pip install mamba-ssm causal-conv1d (built for this torch/CUDA), or use backend=reference")
        return base.forward(self, hidden_states, *args, **kwargs)

    cls = type(f"Guarded{class_name}", (base,), {"forward": forward, "__module__": __name__})
    setattr(sys.modules[__name__], cls.__name__, cls)  # importable by name, so whole modules pickle
    return cls
