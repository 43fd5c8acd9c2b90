"""Our LM as one of fla's own transformers models (GLAForCausalLM, DeltaNetForCausalLM, ...), where it maps exactly.

fla's model classes hold the same stack as ours (embedding, blocks of norm -> mixer -> residual,
norm -> SwiGLU -> residual, norm, head), with the same parameter names inside the mixers (our
reference and fused mixers are built to fla's names). A model maps onto one when:

* its mixer has an fla family below, and every keyword argument of fla's layer (MixerSpec.fla_kwargs)
  is either one that fla's block passes from the model config, or equal to the fla layer's default
  (fla's blocks do not forward, e.g., GLA's gate_logit_normalizer or the short convs' bias);
* one config field drives two things in fla, so they must agree in ours: `norm_eps` is the eps of
  the block norms and of the mixer's own norm; GLA's `hidden_act` is its output gate's activation
  and the MLP's (swish: our SwiGLU);
* the FFN is SwiGLU (fla's GatedMLP), no head bias; hybrid attention layers fit fla's `attn` dict
  (no qk_norm there). fla's softmax `Attention` needs the flash-attn package to be built.

`fla_config(cfg)` returns (fla config class name, config kwargs) or raises Unmappable with every
reason; `fla_state_dict(sd)` renames our state dict to fla's.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from grid.models.config import ModelConfig
from grid.models.registry import get_mixer

# Lazy here: fla (heavy: never at import time on the driver)


class Unmappable(ValueError):
    """The model has no exact equivalent among fla's model classes; the message says why."""


@dataclass(frozen=True)
class FlaFamily:
    model_class: str  # in fla.models
    config_class: str  # in fla.models
    layer_class: str  # in fla.layers: the defaults of the layer kwargs the block does not forward
    forwarded: tuple[str, ...]  # layer kwargs the block passes from the config field of the same name
    renamed: dict[str, str] = field(default_factory=dict)  # layer kwarg -> config field
    fixed: dict[str, Any] = field(default_factory=dict)  # config fields our layer implies


FAMILIES: dict[str, FlaFamily] = {
    "gla": FlaFamily("GLAForCausalLM", "GLAConfig", "GatedLinearAttention",
                     ("expand_k", "expand_v", "num_heads", "num_kv_heads", "feature_map", "use_short_conv", "conv_size",
                      "use_output_gate", "elementwise_affine", "norm_eps", "clamp_min", "fuse_norm"),
                     renamed={"gate_fn": "hidden_act"}),
    "deltanet": FlaFamily("DeltaNetForCausalLM", "DeltaNetConfig", "DeltaNet",
                          ("expand_k", "expand_v", "num_heads", "use_gate", "use_beta", "use_short_conv",
                           "allow_neg_eigval", "conv_size", "qk_norm", "qk_activation", "norm_eps"),
                          fixed={"use_output_norm": True}),
    "gated_deltanet": FlaFamily("GatedDeltaNetForCausalLM", "GatedDeltaNetConfig", "GatedDeltaNet",
                                ("expand_v", "head_dim", "num_heads", "num_v_heads", "use_gate", "use_short_conv",
                                 "allow_neg_eigval", "conv_size", "norm_eps", "output_gate_activation")),
    "attention": FlaFamily("TransformerForCausalLM", "TransformerConfig", "Attention",
                           ("num_heads", "num_kv_heads", "qkv_bias", "qk_norm", "window_size", "rope_theta")),
}
HYBRID_ATTN_FIELDS = ("num_heads", "num_kv_heads", "qkv_bias", "window_size", "rope_theta")  # fla's `attn` dict
SHARED_MLP_ACT = "swish"  # fla's GatedMLP with this activation is our SwiGLU


def _layer_defaults(layer_class: str) -> dict[str, Any]:
    import fla.layers  # noqa: PLC0415  (fla is imported only when an fla export is asked for)

    params = inspect.signature(getattr(fla.layers, layer_class).__init__).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def _layer_kwargs(name: str, cfg: ModelConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    spec = get_mixer(name)
    if spec.fla_kwargs is None:
        raise Unmappable(f"mixer {name!r} declares no fla layer kwargs")
    return spec.fla_kwargs(cfg.d_model, kwargs)


def _family_fields(name: str, fam: FlaFamily, kw: dict[str, Any], cfg: ModelConfig, why: list[str]) -> dict[str, Any]:
    """Config fields of family `fam` for layer kwargs `kw`; appends to `why` what does not map."""
    defaults = _layer_defaults(fam.layer_class)
    out: dict[str, Any] = dict(fam.fixed)
    for key, value in kw.items():
        if key in fam.forwarded:
            out[key] = value
        elif key in fam.renamed:
            out[fam.renamed[key]] = value
        elif key not in defaults:
            why.append(f"{name}: fla's {fam.layer_class} has no argument {key!r}")
        elif defaults[key] != value:
            why.append(f"{name}: {key}={value!r}, but fla's model builds {fam.layer_class} with its default "
                       f"{defaults[key]!r}")
    if "norm_eps" in out and out["norm_eps"] != cfg.norm_eps:
        why.append(f"{name}: norm_eps={out['norm_eps']!r} differs from the model's norm_eps={cfg.norm_eps!r} "
                   "(fla's config has one norm_eps for the block norms and the mixer's norm)")
    if "hidden_act" in out and out["hidden_act"] != SHARED_MLP_ACT:
        why.append(f"{name}: gate_fn={out['hidden_act']!r}: fla's config uses it for the MLP too, which must be "
                   f"{SHARED_MLP_ACT!r} (our SwiGLU)")
    return out


def fla_config(cfg: ModelConfig) -> tuple[str, str, dict[str, Any]]:
    """(fla model class, fla config class, config kwargs) equivalent to `cfg`; Unmappable with every reason."""
    why: list[str] = []
    fam = FAMILIES.get(cfg.mixer)
    if fam is None:
        raise Unmappable(f"mixer {cfg.mixer!r} has no fla model mapping here (mapped: {', '.join(sorted(FAMILIES))})")
    if cfg.ffn.kind != "swiglu":
        why.append(f"ffn.kind={cfg.ffn.kind!r}: fla's models have a SwiGLU MLP")
    if cfg.head_bias:
        why.append("head_bias=true: fla's lm_head has no bias")
    fields = _family_fields(cfg.mixer, fam, _layer_kwargs(cfg.mixer, cfg, cfg.resolved_mixer_kwargs()), cfg, why)
    fields.setdefault("norm_eps", cfg.norm_eps)
    layout = cfg.layout()
    if layout.attention_layers:
        akw = _layer_kwargs("attention", cfg, cfg.resolved_attn_kwargs())
        _family_fields("attention layers", FAMILIES["attention"], akw, cfg, why)
        if akw.get("qk_norm"):
            why.append("attention layers: qk_norm=true is not expressible in fla's `attn` config")
        fields["attn"] = {"layers": list(layout.attention_layers), **{k: akw[k] for k in HYBRID_ATTN_FIELDS}}
    if why:
        raise Unmappable("; ".join(why))
    fields.update(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                  intermediate_size=cfg.ffn.inner(cfg.d_model), hidden_ratio=None,
                  tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=cfg.context,
                  initializer_range=cfg.init_std,
                  fuse_cross_entropy=False)  # a loss with labels then runs anywhere (not a numerics choice)
    fields.setdefault("hidden_act", SHARED_MLP_ACT)
    return fam.model_class, fam.config_class, fields


_RENAMES = [
    (re.compile(r"^embed\."), "model.embeddings."),
    (re.compile(r"^layers\.(\d+)\.mixer_norm\."), r"model.layers.\1.attn_norm."),
    (re.compile(r"^layers\.(\d+)\.mixer\."), r"model.layers.\1.attn."),
    (re.compile(r"^layers\.(\d+)\.ffn_norm\."), r"model.layers.\1.mlp_norm."),
    (re.compile(r"^layers\.(\d+)\.ffn\."), r"model.layers.\1.mlp."),
    (re.compile(r"^norm\."), "model.norm."),
    (re.compile(r"^lm_head\."), "lm_head."),
]


def fla_key(ours: str) -> str:
    for pattern, repl in _RENAMES:
        new, n = pattern.subn(repl, ours)
        if n:
            return new
    raise Unmappable(f"parameter {ours!r} has no place in fla's model")


def fla_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Our LM's state dict with fla's parameter names."""
    return {fla_key(k): v for k, v in state.items()}


__all__ = ["FAMILIES", "Unmappable", "fla_config", "fla_key", "fla_state_dict"]
