"""Mamba (Mamba-1, selective scan): fla's `Mamba` layer only (no reference backend).

Layer (fla.layers.mamba.Mamba): in_proj d -> [x | z] (2I, I = expand * d); x = silu(causal depthwise
conv1d(x)); x_proj I -> [dt_low (R) | B (N) | C (N)]; dt = softplus(dt_proj(dt_low)) per channel
(dt_proj: R -> I with bias); A = -exp(A_log) with A_log [I, N]; h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t
per channel (state [I, N]); y = C_t h_t + D x_t; out = out_proj(y * silu(z)).

Fast path = mamba_ssm's selective-scan CUDA kernels + causal_conv1d. Without them fla runs `slow_forward`,
a python loop over time materialising [B, I, T, N] tensors (and fla's Triton swish): the layer built here
refuses to run on a GPU without mamba_ssm (`guarded_fla_class` in _mamba_fast_path.py) and runs the fallback on CPU
only (tests through the Triton interpreter).

Initialisation: fla's layer (and fla's MambaPreTrainedModel) sets dt_proj.bias to the inverse softplus of a
log-uniform dt in [dt_min, dt_max] and marks it `_no_reinit`; fla's model init also keeps dt_proj.weight at
U(+-dt_rank^-0.5 * dt_scale) (it marks that weight `_no_reinit`, which our global init does not read). We set
`_keep_own_init = True` on dt_proj so the global init (grid/models/init.py) leaves both as the layer made
them, exactly as fla's own model does; in_proj, x_proj, out_proj and conv1d get the global N(0, std).
"""
from __future__ import annotations

import math

from grid.models.errors import ConfigError
from grid.models.mixers._mamba_fast_path import guarded_fla_class
from grid.models.registry import MixerSpec, register


def _dims(d: int, kw: dict) -> tuple[int, int, int]:
    inter = int(kw["expand"] * d)
    if inter <= 0:
        raise ConfigError("expand", kw["expand"], "a positive number")
    if kw["state_size"] <= 0:
        raise ConfigError("state_size", kw["state_size"], "a positive integer")
    rank = kw["dt_rank"]
    if rank == "auto":
        rank = math.ceil(d / 16)
    elif not isinstance(rank, int) or rank <= 0:
        raise ConfigError("dt_rank", rank, '"auto" (ceil(d_model/16)) or a positive integer')
    if kw["dt_init"] not in ("random", "constant"):
        raise ConfigError("dt_init", kw["dt_init"], ["random", "constant"])
    return inter, kw["state_size"], rank


def _fused(d_model: int, layer_idx: int, kw: dict):
    inter, _, rank = _dims(d_model, kw)
    cls = guarded_fla_class("fla.layers.mamba", "Mamba")
    layer = cls(hidden_size=d_model, state_size=kw["state_size"], conv_kernel=kw["conv_kernel"],
                use_conv_bias=kw["use_conv_bias"], intermediate_size=inter, dt_rank=rank,
                dt_min=kw["dt_min"], dt_max=kw["dt_max"], dt_init=kw["dt_init"], dt_scale=kw["dt_scale"],
                dt_init_floor=kw["dt_init_floor"], use_bias=kw["use_bias"], layer_idx=layer_idx)
    layer.dt_proj._keep_own_init = True  # keep the paper's dt_proj weight and inverse-softplus bias
    return layer


def _state(d: int, kw: dict, context: int) -> int:
    """SSM state I*N plus the conv state I*(K-1)."""
    inter, n, _ = _dims(d, kw)
    return inter * n + inter * (kw["conv_kernel"] - 1)


def _flops(d: int, kw: dict, context: int) -> float:
    """7 FLOPs per state element per token: Mamba-2's c=5 (decay multiply, dt*B*x and its add, C read-out)
    plus 2 for the per-element discretisation exp(dt*A) that Mamba-1 needs (Mamba-2's decay is per head).
    O(I) terms (D skip, gate) are not counted."""
    inter, n, _ = _dims(d, kw)
    return 7.0 * inter * n


register(MixerSpec(
    fused_requires=("mamba_ssm",),  # fla's fallback without it is a slow torch path: not 'fused'
    name="mamba",
    family="ssm",
    description="Mamba (selective SSM, per-channel diagonal state [I, N]) via fla's layer on mamba_ssm kernels",
    default_kwargs=dict(
        state_size=16,       # fla / MambaConfig defaults throughout
        expand=2,            # intermediate_size = expand * d_model (MambaConfig's rule)
        conv_kernel=4,
        use_conv_bias=True,
        dt_rank="auto",      # ceil(d_model / 16)
        dt_min=0.001,
        dt_max=0.1,
        dt_init="random",
        dt_scale=1.0,
        dt_init_floor=1e-4,
        use_bias=False,
    ),
    state_size=_state,
    mix_flops=_flops,
    fused=_fused,
    reference=None,
    reference_unavailable=("not implemented: Mamba-1 is benchmarked through fla's layer only (mamba_ssm's "
                           "selective scan on GPU); fla's own slow_forward is its plain-torch fallback"),
    gated_chunk_bwd=False,  # mamba_ssm's selective scan, not fla.ops.common.chunk_o
    size_knobs={"expand": (0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4), "state_size": (8, 16, 32, 64)},
    notes="fused only; refuses on GPU without mamba_ssm + causal_conv1d",
    kwarg_docs=dict(state_size="SSM state N per channel", expand="I = expand * d_model",
                    conv_kernel="short conv length", use_conv_bias="bias in the short conv",
                    dt_rank='rank of the dt projection ("auto" = ceil(d_model/16))',
                    dt_min="dt init range low", dt_max="dt init range high",
                    dt_init='dt_proj weight init: "random" (uniform) or "constant"',
                    dt_scale="scale of the dt_proj weight init", dt_init_floor="dt init floor",
                    use_bias="bias in in_proj/out_proj"),
))
