"""fla's chunked GLA kernels as two torch custom ops, so that torch.compile sees one graph.

    gla_chunk(q, k, v, g) -> o        (autograd: lingrid::gla_chunk_backward)

fla's `chunk_gla` is `torch.compiler.disable`d, so a compiled model broke its graph around every
call, and the work at the breaks ran eagerly: on an H100, in a gla MAD step at T = 1024, an fp32 add
(0.13 ms; the residual stream's gradient meeting across the break) and bf16 copies (0.11 ms; fla's
backward casting dq, dk, dv to the inputs' dtypes) of a 6.6 ms step. As custom ops (opaque calls
with known output shapes) the kernels sit inside one compiled graph: both eager kernels are gone
and Inductor does the casts in its own kernels (docs/gpu.md, session 9).

The ops make the same kernel calls, with the same arguments, as fla 0.6's `ChunkGLAFunction` for
equal-length sequences with no initial state (state_v_first, as GLAFla): `chunk_gla_fwd` forward;
backward `chunk_gla_bwd` from the saved inputs and the intra-chunk attention A, the gate's chunk
cumsum recomputed (fla recomputes it too unless g is fp32, and the cumsum kernel is deterministic).
So the values are fla's; only where the casts run changes.
"""
from __future__ import annotations

import torch

# lazy: fla (and triton under it) is imported only inside the functions that build or call its layers and
# kernels: the registry is read (driver, CPU tests) without importing either (registry.py)


def chunk_size(seq_len: int) -> int:
    """fla's choice in ChunkGLAFunction.forward: the next power of two of T, within [16, 64]."""
    return min(64, max(16, 1 << max(0, seq_len - 1).bit_length()))


@torch.library.custom_op("lingrid::gla_chunk_forward", mutates_args=())
def gla_chunk_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, A): fla's chunk_gla_fwd on [B, T, H, K] q, k, g and [B, T, H, V] v; scale 1/sqrt(K)."""
    from fla.ops.gla.chunk import chunk_gla_fwd  # noqa: PLC0415

    q, k, v, g = (t.contiguous() for t in (q, k, v, g))
    _, A, _, _, o = chunk_gla_fwd(q=q, k=k, v=v, g=g, g_cumsum=None, scale=q.shape[-1] ** -0.5,
                                  initial_state=None, output_final_state=False, state_v_first=True,
                                  cu_seqlens=None, chunk_size=chunk_size(q.shape[1]), chunk_indices=None)
    return o, A


@gla_chunk_forward.register_fake
def _(q, k, v, g):
    B, T, H, _ = q.shape
    return v.new_empty(v.shape), q.new_empty(B, T, H, chunk_size(T), dtype=torch.float32)


@torch.library.custom_op("lingrid::gla_chunk_backward", mutates_args=())
def gla_chunk_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, A: torch.Tensor,
                       do: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dg) as fla's chunk_gla_bwd returns them: dq, dk, dg in fp32, dv in do's dtype."""
    from fla.ops.gla.chunk import chunk_gla_bwd  # noqa: PLC0415

    q, k, v, g, do = (t.contiguous() for t in (q, k, v, g, do))
    dq, dk, dv, dg, _ = chunk_gla_bwd(q=q, k=k, v=v, g=g, g_cumsum=None, scale=q.shape[-1] ** -0.5,
                                      initial_state=None, h=None, A=A, do=do, dht=None, state_v_first=True,
                                      cu_seqlens=None, chunk_size=chunk_size(q.shape[1]), chunk_indices=None)
    return dq, dk, dv, dg


@gla_chunk_backward.register_fake
def _(q, k, v, g, A, do):
    f32 = torch.float32
    return q.new_empty(q.shape, dtype=f32), k.new_empty(k.shape, dtype=f32), do.new_empty(v.shape), \
        g.new_empty(g.shape, dtype=f32)


def _setup_context(ctx, inputs, output):
    q, k, v, g = inputs
    ctx.save_for_backward(q, k, v, g, output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, do, _dA):
    q, k, v, g, A = ctx.saved_tensors
    dq, dk, dv, dg = torch.ops.lingrid.gla_chunk_backward(q, k, v, g, A, do)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg.to(g.dtype)


gla_chunk_forward.register_autograd(_backward, setup_context=_setup_context)


def gla_chunk(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """fla's chunk_gla(q, k, v, g, state_v_first=True)[0], traceable by torch.compile."""
    return torch.ops.lingrid.gla_chunk_forward(q, k, v, g)[0]
