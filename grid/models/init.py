"""The one initialisation, identical for every architecture (principle 1).

* nn.Linear and nn.Conv1d weights ~ N(0, init_std); their biases are zeroed. A tensor marked
  `_no_reinit = True` keeps its layer's init (Mamba's dt projection, whose inverse-softplus bias the
  paper requires; fla marks a few weights the same way).
* nn.Embedding weights ~ N(0, init_std).
* Every other parameter (norm gains, decay rates A_log / dt_bias, RWKV mixing coefficients, ...)
  keeps the init its layer gave it: those are part of the architecture, not of the recipe.
* A mixer whose paper prescribes a whole-layer init (RWKV-6/7) sets `_keep_own_init = True` on the
  module; its subtree is then left untouched.

This matches fla's own `_init_weights` for Linear/Conv1d/Embedding (initializer_range 0.02).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _walk(module: nn.Module):
    if getattr(module, "_keep_own_init", False):
        return
    yield module
    for child in module.children():
        yield from _walk(child)


@torch.no_grad()
def init_weights(model: nn.Module, std: float) -> None:
    for m in _walk(model):
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            if not getattr(m.weight, "_no_reinit", False):
                nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None and not getattr(m.bias, "_no_reinit", False):
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
