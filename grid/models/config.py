"""ModelConfig: YAML in, validated object out. Everything that defines the network is here."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grid.models.ffn import FFNConfig
from grid.models.hybrid import HybridLayout, layout
from grid.models.registry import get_mixer


class ModelConfig(BaseModel):
    """embedding -> n_layers x [RMSNorm -> mixer -> +; RMSNorm -> FFN -> +] -> RMSNorm -> head."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(gt=0)
    d_model: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    mixer: str = Field("gla", description="registry name (python -m grid models)")
    mixer_kwargs: dict[str, Any] = Field(default_factory=dict)
    hybrid: str | list[int] = Field("pure", description='"pure", "r:1" or explicit attention layer indices')
    attn_kwargs: dict[str, Any] = Field(default_factory=dict, description="kwargs of a hybrid's attention layers")
    ffn: FFNConfig = Field(default_factory=FFNConfig)
    tie_embeddings: bool = False
    head_bias: bool = False
    norm_eps: float = Field(1e-5, gt=0)
    init_std: float = Field(0.02, gt=0)
    backend: Literal["auto", "fused", "reference"] = "auto"
    context: int = Field(2048, gt=0, description="sequence length used for state-size and FLOP accounting")

    @field_validator("mixer")
    @classmethod
    def _known_mixer(cls, v: str) -> str:
        get_mixer(v)  # raises with the allowed names
        return v

    @model_validator(mode="after")
    def _check(self):
        spec = get_mixer(self.mixer)
        spec.resolve_kwargs(self.mixer_kwargs, "mixer_kwargs")
        lay = self.layout()
        if lay.attention_layers:
            if not spec.hybrid_ok:
                raise ValueError(f"hybrid={self.hybrid!r} is not allowed with mixer={self.mixer!r} "
                                 "(it is softmax attention already); allowed: pure")
            get_mixer("attention").resolve_kwargs(self.attn_kwargs, "attn_kwargs")
        elif self.attn_kwargs:
            raise ValueError("attn_kwargs is set but hybrid='pure' places no attention layer")
        return self

    def layout(self) -> HybridLayout:
        return layout(self.hybrid, self.n_layers)

    def resolved_mixer_kwargs(self) -> dict[str, Any]:
        return get_mixer(self.mixer).resolve_kwargs(self.mixer_kwargs)

    def resolved_attn_kwargs(self) -> dict[str, Any]:
        return get_mixer("attention").resolve_kwargs(self.attn_kwargs, "attn_kwargs")


def load_model_config(path: str | Path) -> ModelConfig:
    """Read a YAML file whose top level is a ModelConfig (or has a `model:` block)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if isinstance(data, dict) and "model" in data and "d_model" not in data:
        data = data["model"]
    return ModelConfig.model_validate(data)
