"""Scale presets (configs/scales.yaml): width, depth, heads, FFN, token budget, batch, sequence length."""
from __future__ import annotations

import functools
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

SCALES_FILE = Path(__file__).resolve().parent.parent.parent / "configs" / "scales.yaml"


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    d_model: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0, description="softmax-attention heads (transformer and hybrid attention layers)")
    intermediate_size: int = Field(gt=0, description="SwiGLU inner width")
    seq_len: int = Field(gt=0)
    batch_tokens: int = Field(gt=0, description="tokens per optimizer step (all GPUs, after accumulation)")
    tokens: int = Field(gt=0, description="training token budget")
    lr: float = Field(gt=0)
    warmup_steps: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self):
        if self.batch_tokens % self.seq_len:
            raise ValueError(f"batch_tokens={self.batch_tokens} must be a multiple of seq_len={self.seq_len}")
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide d_model={self.d_model}")
        return self

    @property
    def batch_size(self) -> int:
        return self.batch_tokens // self.seq_len

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.batch_tokens)


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Scale]:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return {name: Scale(name=name, **vals) for name, vals in raw.items()}


def get_scale(name: str, path: Path = SCALES_FILE) -> Scale:
    scales = _load(str(path))
    if name not in scales:
        raise ValueError(f"scale={name!r} is not allowed; allowed: {', '.join(scales)}")
    return scales[name]
