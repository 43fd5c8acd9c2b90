"""Channel mixers: SwiGLU (default) and a top-k mixture of SwiGLU experts."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator


class FFNConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["swiglu", "moe", "none"] = "swiglu"
    hidden_ratio: float = Field(4.0, gt=0, description="inner width = round_up(hidden_ratio * 2/3 * d, multiple_of)")
    intermediate_size: int | None = Field(None, gt=0, description="explicit inner width (overrides hidden_ratio)")
    multiple_of: int = Field(256, gt=0)
    n_experts: int = Field(8, gt=1)
    top_k: int = Field(2, gt=0)
    aux_loss_coef: float = Field(0.01, ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "moe" and self.top_k > self.n_experts:
            raise ValueError(f"ffn.top_k={self.top_k} must be <= ffn.n_experts={self.n_experts}")
        return self

    def inner(self, d_model: int) -> int:
        if self.intermediate_size is not None:
            return self.intermediate_size
        raw = int(d_model * self.hidden_ratio * 2 / 3)
        return self.multiple_of * math.ceil(raw / self.multiple_of)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); names as fla's GatedMLP (gate_proj, up_proj, down_proj)."""

    def __init__(self, d_model: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, inner, bias=False)
        self.up_proj = nn.Linear(d_model, inner, bias=False)
        self.down_proj = nn.Linear(inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoE(nn.Module):
    """Top-k routed SwiGLU experts with a Switch-style load-balancing loss (kept in `self.aux_loss`).

    Tokens are dispatched per expert with index_select, so compute scales with top_k, not n_experts.
    """

    def __init__(self, d_model: int, inner: int, n_experts: int, top_k: int):
        super().__init__()
        self.top_k, self.n_experts = top_k, n_experts
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_model, inner) for _ in range(n_experts))
        self.aux_loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = self.router(x).float().softmax(-1)
        weights, idx = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel():
                out.index_add_(0, tok, expert(x[tok]) * weights[tok, slot, None])
        # fraction of tokens routed to each expert x mean router probability (Switch Transformer)
        load = F.one_hot(idx, self.n_experts).float().sum(1).mean(0) / self.top_k
        self.aux_loss = self.n_experts * (load * probs.mean(0)).sum()
        return out.reshape(shape)


def build_ffn(cfg: FFNConfig, d_model: int) -> nn.Module | None:
    if cfg.kind == "none":
        return None
    if cfg.kind == "swiglu":
        return SwiGLU(d_model, cfg.inner(d_model))
    return MoE(d_model, cfg.inner(d_model), cfg.n_experts, cfg.top_k)
