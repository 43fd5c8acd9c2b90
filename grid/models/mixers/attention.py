"""Softmax attention (MHA / GQA, RoPE, optional sliding window).

Both backends are this module: `fused` runs flash-attn when it is installed (CUDA, bf16/fp16)
and torch SDPA otherwise; `reference` computes softmax(QK^T)V explicitly. Parameter names match
fla's `Attention` layer (q_proj, k_proj, v_proj, o_proj, optional q_norm/k_norm), so fla and m-a-p
checkpoints load. fla's own layer is not used: it hard-requires flash-attn at construction.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models.errors import ConfigError
from grid.models.mixers._common import ROPE_TABLE_POSITIONS, RMSNorm, rope_table, rotary
from grid.models.registry import MixerSpec, register

# lazy: flash_attn is optional (a GPU extra): imported where it runs, after _flash_ok found it installed


def default_heads(d_model: int) -> int:
    return max(1, d_model // 64)


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int | None = None, num_kv_heads: int | None = None,
                 window_size: int | None = None, rope_theta: float | None = 10000.0, qkv_bias: bool = False,
                 qk_norm: bool = False, impl: str = "sdpa", layer_idx: int | None = None):
        super().__init__()
        num_heads = num_heads or default_heads(hidden_size)
        num_kv_heads = num_kv_heads or num_heads
        if hidden_size % num_heads:
            raise ConfigError("num_heads", num_heads, f"divisors of d_model={hidden_size}")
        if num_heads % num_kv_heads:
            raise ConfigError("num_kv_heads", num_kv_heads, f"divisors of num_heads={num_heads}")
        if window_size is not None and window_size < 1:
            raise ConfigError("window_size", window_size, "null or a positive integer")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = hidden_size // num_heads
        self.window_size, self.rope_theta, self.impl = window_size, rope_theta, impl
        kv_dim = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, kv_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, kv_dim, bias=qkv_bias)
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim)
            self.k_norm = RMSNorm(self.head_dim)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        if rope_theta is not None:  # lookup table, not saved in checkpoints (see rotary)
            cos, sin = rope_table(ROPE_TABLE_POSITIONS, self.head_dim, rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Recompute the non-persistent RoPE table in place (a loader that materialises modules from the meta
        device, as transformers' from_pretrained does, leaves it uninitialised: grid/export)."""
        if self.rope_theta is not None:
            cos, sin = rope_table(ROPE_TABLE_POSITIONS, self.head_dim, self.rope_theta)
            self.rope_cos.copy_(cos.to(self.rope_cos.device))
            self.rope_sin.copy_(sin.to(self.rope_sin.device))

    def forward(self, x: torch.Tensor, **_) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_theta is not None:
            table = (self.rope_cos, self.rope_sin)
            q, k = rotary(q, self.rope_theta, table=table), rotary(k, self.rope_theta, table=table)
        if self.impl == "sdpa" and _flash_ok(q):
            from flash_attn import flash_attn_func  # noqa: PLC0415

            w = (-1, -1) if self.window_size is None else (self.window_size - 1, 0)
            o = flash_attn_func(q, k, v, causal=True, window_size=w)
        else:
            o = self._torch_attention(q, k, v)
        return self.o_proj(o.reshape(B, T, -1))

    def _mask(self, T: int, device) -> torch.Tensor | None:
        if self.window_size is None or self.window_size >= T:
            return None
        i = torch.arange(T, device=device)
        d = i[:, None] - i[None, :]
        return (d >= 0) & (d < self.window_size)  # query t sees keys t-w+1 .. t

    def _torch_attention(self, q, k, v) -> torch.Tensor:
        T = q.shape[1]
        rep = self.num_heads // self.num_kv_heads
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        mask = self._mask(T, q.device)
        if self.impl == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        else:
            scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(self.head_dim)
            allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril() if mask is None else mask
            scores = scores.masked_fill(~allowed, float("-inf"))
            o = (scores.softmax(-1) @ v.float()).to(v.dtype)
        return o.transpose(1, 2)


def _flash_ok(q: torch.Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and importlib.util.find_spec("flash_attn") is not None


def _build(impl: str):
    def build(d_model: int, layer_idx: int, kw: dict) -> Attention:
        return Attention(d_model, impl=impl, layer_idx=layer_idx, **kw)
    return build


def _fla_kwargs(d: int, kw: dict) -> dict:
    """Keyword arguments of fla's Attention layer for these kwargs (heads resolved as our layer does)."""
    h = kw.get("num_heads") or default_heads(d)
    return {**kw, "num_heads": h, "num_kv_heads": kw.get("num_kv_heads") or h}


def _avg_keys(context: int, window: int | None) -> float:
    """Mean number of keys a causal query sees over positions 1..context."""
    if window is None or window >= context:
        return (context + 1) / 2
    return (window * (window + 1) / 2 + (context - window) * window) / context


def _heads(d: int, kw: dict) -> tuple[int, int, int]:
    h = kw.get("num_heads") or default_heads(d)
    return h, kw.get("num_kv_heads") or h, d // h


def _state(d: int, kw: dict, context: int) -> int:
    _, hkv, hd = _heads(d, kw)
    w = kw.get("window_size")
    return 2 * hkv * hd * (context if w is None else min(w, context))  # the KV cache


def _flops(d: int, kw: dict, context: int) -> float:
    h, _, hd = _heads(d, kw)
    return 4.0 * h * hd * _avg_keys(context, kw.get("window_size"))  # QK^T and AV


register(MixerSpec(
    name="attention",
    fused_traceable=True,  # our own module: SDPA or flash-attn's torch-registered ops
    family="softmax",
    description="softmax attention: MHA/GQA, RoPE, optional sliding window (flash-attn if installed, else SDPA)",
    default_kwargs=dict(num_heads=None, num_kv_heads=None, window_size=None, rope_theta=10000.0,
                        qkv_bias=False, qk_norm=False),
    state_size=_state,
    mix_flops=_flops,
    fused=_build("sdpa"),
    reference=_build("math"),
    fla_kwargs=_fla_kwargs,
    fused_needs_cuda=False,
    fused_needs_fla=False,
    hybrid_ok=False,
    notes="fused = flash-attn/SDPA; runs on CPU through SDPA",
))
