"""The one LM stack. Only the mixer (and the hybrid placement of attention) changes between models."""
from __future__ import annotations

import torch
import torch.nn as nn

from grid.models.config import ModelConfig
from grid.models.embedding_grad import embed_tokens
from grid.models.errors import BackendUnavailable
from grid.models.ffn import build_ffn
from grid.models.init import init_weights
from grid.models.mixers._common import RMSNorm, first
from grid.models.registry import MixerSpec, build_mixer, fused_status, get_mixer, reference_status

# Lazy here: torch (heavy: never at import time on the driver)



class Block(nn.Module):
    """x + mixer(norm(x)), then x + ffn(norm(x)). `kind` says which mixer this layer holds.

    `cast_input`: under autocast, hand the mixer its input already in the autocast dtype. A third-party
    fused layer runs eagerly (outside torch.compile), and autocast would cast the fp32 normed input
    once per projection and sum the projections' input gradients in fp32, one eager kernel each
    (GLA: five casts, five gradient casts and four fp32 sums per layer). On an H100, a gla MAD step
    at T = 1024 went from 8.2 to 6.9 ms of GPU time with one cast (docs/gpu.md, session 7). Only for
    layers whose input feeds nothing but nn.Linear (MixerSpec.fused_input_feeds_linears_only): the
    forward is the same, and the input gradient is summed in the autocast dtype before its one cast
    back.
    """

    def __init__(self, d_model: int, mixer: nn.Module, ffn: nn.Module | None, eps: float, kind: str, backend: str,
                 cast_input: bool = False):
        super().__init__()
        self.mixer_norm = RMSNorm(d_model, eps=eps)
        self.mixer = mixer
        self.ffn_norm = RMSNorm(d_model, eps=eps) if ffn is not None else None
        self.ffn = ffn
        self.kind, self.backend, self.cast_input = kind, backend, cast_input

    @property
    def third_party_fused(self) -> bool:
        """Runs third-party kernels that torch.compile must not trace (grid.models.compile)."""
        return self.backend == "fused" and not get_mixer(self.kind).fused_traceable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mixer_norm(x)
        if self.cast_input and torch.is_autocast_enabled(h.device.type):
            h = h.to(torch.get_autocast_dtype(h.device.type))
        x = x + first(self.mixer(h))
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return x


class LM(nn.Module):
    """`apply_init=False` leaves every layer as its constructor made it (PyTorch's defaults, the
    layers' own inits): a reproduced protocol (MAD's `madlab`) then applies its own rule."""

    def __init__(self, cfg: ModelConfig, counting_only: bool = False, apply_init: bool = True):
        super().__init__()
        self.cfg = cfg
        self.layout = cfg.layout()
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        layers = []
        for i in range(cfg.n_layers):
            name = "attention" if self.layout.is_attention(i) else cfg.mixer
            spec = get_mixer(name)
            kw = cfg.resolved_attn_kwargs() if name != cfg.mixer else cfg.resolved_mixer_kwargs()
            if counting_only:  # same names and shapes in both backends: build whichever constructs here
                backend = "reference" if spec.reference is not None else "fused"
                mixer = (spec.reference or spec.fused)(d, i, kw)
            else:
                backend = resolve_backend(spec, cfg.backend)
                mixer = build_mixer(spec, d, i, kw, backend)
            layers.append(Block(d, mixer, build_ffn(cfg.ffn, d), cfg.norm_eps, name, backend,
                                cast_input=backend == "fused" and spec.fused_input_feeds_linears_only))
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(d, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(d, cfg.vocab_size, bias=cfg.head_bias)
        if apply_init:
            init_weights(self, cfg.init_std)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def residual(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The residual stream after the last block, before the final norm [B, T, D]."""
        x = embed_tokens(self.embed, input_ids)
        for block in self.layers:
            x = block(x)
        return x

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden states [B, T, D]."""
        return self.norm(self.residual(input_ids))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden(input_ids))

    @property
    def aux_loss(self) -> torch.Tensor | float:
        """Sum of MoE load-balancing losses of the last forward (0 without MoE), already weighted."""
        coef = self.cfg.ffn.aux_loss_coef
        losses = [b.ffn.aux_loss for b in self.layers if hasattr(b.ffn, "aux_loss")]
        return coef * sum(losses) if losses else 0.0

    @property
    def backends(self) -> dict[str, str]:
        """{mixer name: backend actually used}."""
        return {b.kind: b.backend for b in self.layers}


def resolve_backend(spec: MixerSpec, wanted: str) -> str:
    """auto = fused where it can run, else reference; an explicit choice that cannot run is an error."""
    if wanted in ("fused", "reference"):
        return wanted
    ok, why_fused = fused_status(spec)
    if ok:
        return "fused"
    ref_ok, why_ref = reference_status(spec)
    if ref_ok:
        return "reference"
    raise BackendUnavailable(f"mixer {spec.name!r} cannot run here: fused: {why_fused}; reference: {why_ref}")


def build_model(cfg: ModelConfig, apply_init: bool = True) -> LM:
    return LM(cfg, apply_init=apply_init)


def build_for_counting(cfg: ModelConfig) -> LM:
    """A model for parameter/state/FLOP accounting only: parameters live on the meta device (no memory,
    so 7B configs are cheap), and fused-only mixers are constructed even where they cannot run."""
    import torch  # noqa: PLC0415

    try:
        with torch.device("meta"):
            return LM(cfg, counting_only=True)
    except (NotImplementedError, RuntimeError):  # a layer whose own init needs real tensors
        return LM(cfg, counting_only=True)
