"""Plain-PyTorch building blocks shared by the reference mixers.

They mirror fla's modules in parameter names and shapes (so state dicts load both ways) and in
the math they compute; they run on CPU. Norms compute in fp32 like fla's Triton kernels do.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """fla.modules.RMSNorm: weight (and optional bias) of size hidden_size, fp32 statistics."""

    def __init__(self, hidden_size: int, elementwise_affine: bool = True, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(hidden_size))
            if bias:
                self.bias = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.affine(y).to(dtype)

    def affine(self, y: torch.Tensor) -> torch.Tensor:
        """y * weight + bias in fp32 (a member-stacked copy applies its M weights here: grid/models/stacked.py)."""
        if self.weight is not None:
            y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        return y


def _gate_act(g: torch.Tensor, activation: str) -> torch.Tensor:
    if activation in ("swish", "silu"):
        return F.silu(g)
    if activation == "sigmoid":
        return torch.sigmoid(g)
    raise ValueError(f"gate activation {activation!r} not supported; allowed: swish, silu, sigmoid")


class RMSNormGated(nn.Module):
    """fla.modules.FusedRMSNormGated: rmsnorm(x) * weight * act(g), computed in fp32."""

    def __init__(self, hidden_size: int, elementwise_affine: bool = True, eps: float = 1e-5, activation: str = "swish"):
        super().__init__()
        self.eps, self.activation = eps, activation
        self.register_parameter("bias", None)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(hidden_size))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.affine(y) * _gate_act(g.float(), self.activation)).to(dtype)

    def affine(self, y: torch.Tensor) -> torch.Tensor:
        """y * weight in fp32 (a member-stacked copy applies its M weights here: grid/models/stacked.py)."""
        return y * self.weight.float() if self.weight is not None else y


class ShortConvolution(nn.Conv1d):
    """fla.modules.ShortConvolution: depthwise causal conv over time, then optional SiLU.

    Input and output are [B, T, C]; parameter `weight` is [C, 1, K] (and `bias` [C] if enabled).
    """

    def __init__(self, hidden_size: int, kernel_size: int, bias: bool = False, activation: str | None = "silu"):
        super().__init__(hidden_size, hidden_size, kernel_size, padding=kernel_size - 1, groups=hidden_size, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        y = F.conv1d(x.transpose(1, 2), self.weight, self.bias, padding=self.kernel_size[0] - 1, groups=self.groups)
        y = y[..., :T].transpose(1, 2)  # drop the right padding: output t sees inputs <= t only
        return F.silu(y) if self.activation in ("silu", "swish") else y


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """fla.modules.l2norm: x / sqrt(sum(x^2) + eps) over the last dim, fp32 math."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


ROPE_TABLE_POSITIONS = 4096  # positions precomputed per attention layer (longer sequences compute on the fly)


def rope_table(positions: int, dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, [positions, dim // 2] fp32 (non-interleaved halves)."""
    half = dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, half, dtype=torch.float32) / half))
    freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
    return freqs.cos(), freqs.sin()


def rotary(x: torch.Tensor, theta: float = 10000.0, offset: int = 0,
           table: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Rotary position embedding (non-interleaved halves, as fla's RotaryEmbedding). x: [B, T, H, D].

    `table` = rope_table(L, D, theta) on x's device: cos/sin are looked up instead of computed. Why:
    under torch.compile the angles' pow/cos/sin are fused into the per-element kernel and evaluated
    for every (batch, head) again; that was 26 % of a 350M transformer's step on an H100 (docs/gpu.md)."""
    T, D = x.shape[1], x.shape[-1]
    half = D // 2
    if table is not None and offset + T <= table[0].shape[0]:
        cos, sin = table[0][offset:offset + T], table[1][offset:offset + T]
    else:
        inv_freq = 1.0 / (theta ** (torch.arange(0, half, device=x.device, dtype=torch.float32) / half))
        freqs = torch.outer(torch.arange(offset, offset + T, device=x.device, dtype=torch.float32), inv_freq)
        cos, sin = freqs.cos(), freqs.sin()
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, xf[..., 2 * half:]], dim=-1)
    return out.to(x.dtype)


def first(out):
    """fla layers return (output, attentions, cache[, ...]); ours return the output tensor."""
    return out[0] if isinstance(out, tuple) else out
