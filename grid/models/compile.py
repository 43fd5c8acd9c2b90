"""torch.compile for our LM stack (and the MAD backbones built from it), in place.

    compile_model(model) -> list of the layers kept eager

Inductor fuses what is ours (norms, SwiGLU, residuals, RoPE, casts, their backward). The fused
backends of the linear mixers call third-party Triton/CUDA kernels (fla, causal-conv1d, ...), which
dynamo need not trace: fla 0.6 marks its chunked kernels `torch.compiler.disable` but not, for
example, the fused-recurrent kernels that GLA switches to for T <= 64 (compiling fla's layers made
MAD's T = 32 gla runs fail on an H100; docs/gpu.md, session 5). So every fused mixer runs eagerly
behind a clean graph break, except those whose fused layer is our own module
(MixerSpec.fused_traceable: attention, and gla's GLAFla, which keeps fla's kernels behind their own
graph break); reference backends are compiled.
State-dict names do not change. One process may compile many models (packed MAD runs, train and
eval mode, a smaller last batch), so dynamo's recompile limit is raised: a model that hit it would
silently fall back to eager.
"""
from __future__ import annotations

import torch.nn as nn

from grid.models.stack import Block

# Lazy here: torch (heavy: never at import time on the driver)

RECOMPILE_LIMIT = 64


def compile_model(model: nn.Module) -> list[str]:
    """Compile `model` in place; return the names of the mixers left eager (third-party kernels)."""

    import torch._dynamo  # noqa: PLC0415

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    eager = []
    for name, mod in model.named_modules():
        if isinstance(mod, Block) and mod.third_party_fused:
            mod.mixer.forward = torch.compiler.disable(mod.mixer.forward)
            eager.append(f"{name}.mixer")
    # static shapes: a process that meets a second sequence length (profiles, reused Ray workers) would
    # otherwise recompile with symbolic lengths, slower on the GPU (CR T=1023: 6.62 vs 6.44 ms a step)
    model.compile(dynamic=False)
    return eager


def is_compiled(model: nn.Module) -> bool:
    """Whether `model.compile()` was called on it (compile_model does): losses around such a model are
    worth compiling too."""
    return getattr(model, "_compiled_call_impl", None) is not None
