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
        if self.weight is not None:
            y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(dtype)


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
        if self.weight is not None:
            y = y * self.weight.float()
        return (y * _gate_act(g.float(), self.activation)).to(dtype)


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


def rotary(x: torch.Tensor, theta: float = 10000.0, offset: int = 0) -> torch.Tensor:
    """Rotary position embedding (non-interleaved halves, as fla's RotaryEmbedding). x: [B, T, H, D]."""
    T, D = x.shape[1], x.shape[-1]
    half = D // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, half, device=x.device, dtype=torch.float32) / half))
    pos = torch.arange(offset, offset + T, device=x.device, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq)  # [T, half]
    cos, sin = freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:2 * half]
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, xf[..., 2 * half:]], dim=-1)
    return out.to(x.dtype)


def first(out):
    """fla layers return (output, attentions, cache[, ...]); ours return the output tensor."""
    return out[0] if isinstance(out, tuple) else out
