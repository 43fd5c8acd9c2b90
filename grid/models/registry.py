"""The one registry of token mixers.

Every family lives in one file under `grid/models/mixers/` and calls `register(MixerSpec(...))`.
A spec declares both backends:

* `fused(d_model, layer_idx, kwargs) -> nn.Module`: the fla Triton layer (imports fla lazily:
  driver-side code must never import fla or triton at module top level);
* `reference(d_model, layer_idx, kwargs) -> nn.Module`: our plain-PyTorch module with the *same
  parameter names and shapes*, so `load_state_dict(strict=True)` works both ways.

A mixer module maps [B, T, D] -> [B, T, D]; fla layers return a tuple whose first element is the
output, the block takes care of that.

Accounting hooks: `state_size(d_model, kwargs, context)` is the number of elements of recurrent
state (or KV cache) one sequence keeps per layer at inference; `mix_flops(d_model, kwargs,
context)` is the forward FLOPs per token of the sequence-mixing step itself (everything except
the weight matmuls, which accounting counts as 2 x weight parameters of the built module).
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from grid.env import kernels
from grid.models import autotune
from grid.models.errors import BackendUnavailable, ConfigError

# Lazy here: grid (they import torch or Ray)

Builder = Callable[[int, int, dict[str, Any]], Any]


@dataclass(frozen=True)
class MixerSpec:
    name: str
    family: str  # softmax | linear | gated-linear | delta | ssm | rnn
    description: str
    default_kwargs: dict[str, Any]
    state_size: Callable[[int, dict[str, Any], int], int]
    mix_flops: Callable[[int, dict[str, Any], int], float]
    fused: Builder | None = None
    reference: Builder | None = None
    reference_unavailable: str | None = None  # why there is no reference backend
    fused_unavailable: str | None = None  # why there is no fused backend (e.g. plain-PyTorch lstm)
    allowed_kwargs: frozenset[str] | None = None  # None: exactly the keys of default_kwargs
    # fla refuses the gated chunked backward on Hopper with triton 3.4-3.7.0 (wrong gradients)
    gated_chunk_bwd: bool = False
    fused_needs_cuda: bool = True
    fused_needs_fla: bool = True
    fused_requires: tuple[str, ...] = ()  # extra importable packages the fused path needs (e.g. mamba_ssm)
    hybrid_ok: bool = True  # False for softmax attention itself
    # the fused layer uses its input only as the input of nn.Linear layers (checked in its source), so
    # the block may hand it the input already cast to the autocast dtype: the same forward, one cast
    # instead of one per projection (see grid.models.stack.Block)
    fused_input_feeds_linears_only: bool = False
    # the fused layer is our own module (third-party kernels only behind their own graph breaks), so
    # torch.compile traces it; else it runs eagerly behind one graph break (grid.models.compile)
    fused_traceable: bool = False
    notes: str = ""
    # (d_model, resolved kwargs) -> the keyword arguments of fla's own layer for this mixer (what the fused
    # builder passes, None values resolved); grid/export maps them onto fla's model configs. None: no fla model
    fla_kwargs: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
    kwarg_docs: dict[str, str] = field(default_factory=dict)
    # iso-parameter sizing: candidate values of the knobs that change the mixer's width
    # (e.g. {"num_heads": (1, 2, 4, 8), "expand_v": (0.5, 1, 2)}); see grid/models/sizing.py
    size_knobs: dict[str, tuple] = field(default_factory=dict)

    def kwargs_allowed(self) -> frozenset[str]:
        return self.allowed_kwargs if self.allowed_kwargs is not None else frozenset(self.default_kwargs)

    def resolve_kwargs(self, kwargs: dict[str, Any] | None, field_name: str = "mixer_kwargs") -> dict[str, Any]:
        """Defaults overlaid with user kwargs; unknown keys are an error naming the allowed ones."""
        kwargs = dict(kwargs or {})
        allowed = self.kwargs_allowed()
        for key in kwargs:
            if key not in allowed:
                raise ConfigError(f"{field_name}.{key}", kwargs[key], sorted(allowed),
                                  hint=f"unknown keyword for mixer {self.name!r}")
        return {**self.default_kwargs, **kwargs}


_REGISTRY: dict[str, MixerSpec] = {}
_LOADED = False


def register(spec: MixerSpec) -> MixerSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"mixer {spec.name!r} registered twice")
    if spec.fused is None and spec.reference is None:
        raise ValueError(f"mixer {spec.name!r} has no backend at all")
    _REGISTRY[spec.name] = spec
    return spec


def _load_all() -> None:
    """Import every family file once (adding a family = adding one file)."""
    global _LOADED
    if _LOADED:
        return
    import grid.models.mixers as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _LOADED = True


def mixer_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get_mixer(name: str, field_name: str = "mixer") -> MixerSpec:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(field_name, name, sorted(_REGISTRY))
    return _REGISTRY[name]


def all_mixers() -> list[MixerSpec]:
    _load_all()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def build_mixer(spec: MixerSpec, d_model: int, layer_idx: int, kwargs: dict[str, Any], backend: str):
    """Build one mixer layer with the resolved backend ('fused' or 'reference')."""
    if backend == "reference":
        if spec.reference is None:
            raise BackendUnavailable(f"mixer {spec.name!r} has no reference backend: {spec.reference_unavailable}")
        return spec.reference(d_model, layer_idx, kwargs)
    if backend == "fused":
        ok, reason = fused_status(spec)
        if not ok:
            other = ("; backend=reference runs it in plain PyTorch" if spec.reference is not None else
                     f"; it has no reference backend ({spec.reference_unavailable or 'none'})")
            raise BackendUnavailable(f"mixer {spec.name!r}: fused backend unavailable: {reason}{other}")

        autotune.apply()  # LINGRID_AUTOTUNE=first: one compile per kernel instead of every candidate
        return spec.fused(d_model, layer_idx, kwargs)
    raise ConfigError("backend", backend, ["fused", "reference"])


def fused_status(spec: MixerSpec) -> tuple[bool, str]:
    """Can the fused backend of this mixer run here? (ok, reason). Imports nothing heavy unless needed."""
    if spec.fused is None:
        return False, spec.fused_unavailable or "no fused backend"
    return kernels.fused_ok(spec)


def reference_status(spec: MixerSpec) -> tuple[bool, str]:
    if spec.reference is None:
        return False, spec.reference_unavailable or "no reference backend"
    return True, "plain PyTorch (CPU and GPU)"
