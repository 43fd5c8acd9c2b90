"""Parameter, state and FLOP accounting for a built model (principle 1: visible, not assumed).

Conventions
* non-embedding parameters exclude the token embedding and the LM head (tied or not), as in
  Kaplan et al. and the scaling-law study (studies.md B.4).
* FLOPs per token (forward) = 2 x (weight parameters touched per token: mixers, active FFN
  experts, head) + the mixers' sequence-mixing terms (registry `mix_flops`, at `context`).
  Training FLOPs per token = 3 x forward. Norms and elementwise ops are not counted.
* state size = elements one sequence keeps per layer at inference, summed over layers
  (recurrent state, or the KV cache of attention layers at `context` tokens).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch.nn as nn

from grid.models.ffn import MoE
from grid.models.registry import get_mixer


def n_params(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters())


@dataclass
class LayerRow:
    index: int
    mixer: str
    backend: str
    mixer_params: int
    ffn_params: int
    ffn_active_params: int
    norm_params: int
    state: int
    fwd_flops_per_token: float


@dataclass
class Accounting:
    total_params: int
    embedding_params: int
    head_params: int  # 0 when tied
    non_embedding_params: int
    mixer_params: int
    attention_params: int  # mixer params sitting in a hybrid's attention layers
    ffn_params: int
    norm_params: int
    state_size: int
    context: int
    fwd_flops_per_token: float
    train_flops_per_token: float
    nominal_ratio: str
    effective_ratio: str
    attention_layers: list[int]
    per_mixer_params: dict[str, int]
    layers: list[LayerRow] = field(default_factory=list)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("layers")
        return d


def account(model) -> Accounting:
    """Counts for an `LM` built by `build_model` (parameters are read off the real modules)."""
    cfg, lay = model.cfg, model.layout
    ctx = cfg.context
    rows, per_mixer = [], {}
    for i, block in enumerate(model.layers):
        spec = get_mixer(block.kind)
        kw = cfg.resolved_attn_kwargs() if block.kind != cfg.mixer else cfg.resolved_mixer_kwargs()
        mp = n_params(block.mixer)
        fp = n_params(block.ffn)
        if isinstance(block.ffn, MoE):
            expert = n_params(block.ffn.experts[0])
            fa = n_params(block.ffn.router) + block.ffn.top_k * expert
        else:
            fa = fp
        norms = n_params(block.mixer_norm) + n_params(block.ffn_norm)
        flops = 2.0 * (mp + fa) + spec.mix_flops(cfg.d_model, kw, ctx)
        rows.append(LayerRow(i, block.kind, block.backend, mp, fp, fa, norms, spec.state_size(cfg.d_model, kw, ctx), flops))
        per_mixer[block.kind] = per_mixer.get(block.kind, 0) + mp
    emb = n_params(model.embed)
    head = 0 if cfg.tie_embeddings else n_params(model.lm_head)
    total = n_params(model)
    head_flops = 2.0 * cfg.d_model * cfg.vocab_size
    fwd = sum(r.fwd_flops_per_token for r in rows) + head_flops
    return Accounting(
        total_params=total,
        embedding_params=emb,
        head_params=head,
        non_embedding_params=total - emb - head,
        mixer_params=sum(r.mixer_params for r in rows),
        attention_params=sum(r.mixer_params for r in rows if r.index in lay.attention_layers),
        ffn_params=sum(r.ffn_params for r in rows),
        norm_params=sum(r.norm_params for r in rows) + n_params(model.norm),
        state_size=sum(r.state for r in rows),
        context=ctx,
        fwd_flops_per_token=fwd,
        train_flops_per_token=3.0 * fwd,
        nominal_ratio=lay.nominal,
        effective_ratio=lay.effective,
        attention_layers=list(lay.attention_layers),
        per_mixer_params=per_mixer,
        layers=rows,
    )
