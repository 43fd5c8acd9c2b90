"""MAD backbones built from the project's one LM stack (spec/mad.md §4).

* LM backbone (every task but compression): `build_model(cfg)` with MAD's shape: width 128,
  [mixer, SwiGLU, mixer, SwiGLU] = 2 blocks of our stack, SwiGLU inner width 352
  (hidden_ratio 4 -> int(8d/3) = 341 rounded up to a multiple of 16), RMSNorm eps 1e-5, final
  RMSNorm, untied head Linear(d -> V) with bias, no positional embedding (positions come from the
  mixers, e.g. RoPE in attention). `mad_model_config` fills these in.
* AutoEncoder (compression): encoder = our stack's `hidden()` (embedding, blocks, final RMSNorm);
  pool the last position (the compression token); broadcast to L positions + fixed sin-cos
  position embeddings; MLP RMSNorm -> Linear -> GELU -> RMSNorm -> Linear -> GELU; then
  RMSNorm -> Linear d -> V (with bias).

Initialisation: we use the project's ONE init for every architecture (grid/models/init.py):
Linear/Conv1d weights and embeddings ~ N(0, 0.02), biases zeroed except `_no_reinit` ones,
mixers flagged `_keep_own_init` (RWKV) and non-Linear parameters (decay rates, ...) keep their own.
Where this differs from mad-lab (main, commit 0f49a45):
* mad-lab's LM backbone keeps PyTorch's default (Kaiming-uniform) Linear weight init since PR #4
  (Dec 2024); paper-era mad-lab re-initialised all Linear weights to N(0, 0.02) and zeroed every
  bias, overwriting Mamba's dt init. Ours is N(0, 0.02) for Linear weights (paper-era) while
  keeping the layers' special inits (what PR #4 fixed).
* mad-lab's attention layer has qkv/out biases (FlashAttention MHA); ours follows fla's layers.
* The AutoEncoder: mad-lab initialises everything N(0, 0.02) with zero biases, which is what our
  init does to the decoder; the encoder gets the same rule as the LM stack (special inits kept).
* The encoder ends with our stack's final RMSNorm (`LM.hidden` is final-normed); the decoder's
  first RMSNorm follows it.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from grid.models import ModelConfig, build_model
from grid.models.ffn import FFNConfig
from grid.models.init import init_weights
from grid.models.mixers._common import RMSNorm

MAD_D_MODEL = 128
MAD_N_LAYERS = 2  # blocks; each = mixer + SwiGLU, i.e. mad-lab's 4 layers
MAD_FFN = {"kind": "swiglu", "hidden_ratio": 4, "multiple_of": 16}


def mad_model_config(mixer: str, mixer_kwargs: dict[str, Any] | None, vocab_size: int, seq_len: int, *,
                     backend: str = "auto", **overrides: Any) -> ModelConfig:
    """The MAD LM backbone around `mixer`; `overrides` replace stack fields (n_layers, ffn, hybrid, ...)."""
    base: dict[str, Any] = dict(vocab_size=vocab_size, d_model=MAD_D_MODEL, n_layers=MAD_N_LAYERS, mixer=mixer,
                                mixer_kwargs=dict(mixer_kwargs or {}), ffn=FFNConfig(**MAD_FFN), head_bias=True,
                                tie_embeddings=False, backend=backend, context=seq_len)
    base.update(overrides)
    return ModelConfig(**base)


def sincos_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal position table [length, dim]: sin on even channels, cos on odd ones."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


class AutoEncoder(nn.Module):
    """Compression backbone: encode, pool the last position, decode every position from that vector."""

    def __init__(self, cfg: ModelConfig, seq_len: int):
        super().__init__()
        d = cfg.d_model
        self.seq_len = seq_len
        self.encoder = build_model(cfg)
        self.encoder.lm_head = None  # the encoder's head is unused: no dead parameters
        self.register_buffer("positions", sincos_positions(seq_len, d), persistent=False)
        self.decoder = nn.Sequential(
            RMSNorm(d, eps=cfg.norm_eps), nn.Linear(d, d), nn.GELU(),
            RMSNorm(d, eps=cfg.norm_eps), nn.Linear(d, d), nn.GELU(),
        )
        self.head_norm = RMSNorm(d, eps=cfg.norm_eps)
        self.head = nn.Linear(d, cfg.vocab_size, bias=True)
        init_weights(self.decoder, cfg.init_std)
        init_weights(self.head, cfg.init_std)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        if L > self.seq_len:
            raise ValueError(f"sequence length {L} > the AutoEncoder's seq_len {self.seq_len}")
        pooled = self.encoder.hidden(input_ids)[:, -1]  # [B, D]
        x = pooled[:, None, :] + self.positions[:L].to(pooled.dtype)  # broadcast to L positions
        return self.head(self.head_norm(self.decoder(x)))

    @property
    def aux_loss(self):
        return self.encoder.aux_loss

    @property
    def backends(self) -> dict[str, str]:
        return self.encoder.backends


def build_backbone(cfg: ModelConfig, task_code: str, seq_len: int) -> nn.Module:
    """LM for every MAD task except compression ('C'), which gets the AutoEncoder."""
    return AutoEncoder(cfg, seq_len) if task_code == "C" else build_model(cfg)


def token_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CrossEntropy(ignore_index=-100) over the flattened logits, in fp32."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)


_compiled_cross_entropy = None


def compiled_cross_entropy():
    """token_cross_entropy under torch.compile, built once per process (its guards are shapes and
    dtypes, so packed runs share it). Eagerly, aten's loss is a dtype copy, a log-softmax and an NLL
    kernel whose reduction runs in one thread block (that kernel alone: 0.08 ms of a gla MAD step at
    T = 1024 on an H100; docs/gpu.md, session 9); Inductor fuses it into a couple of kernels, forward and backward."""
    global _compiled_cross_entropy
    if _compiled_cross_entropy is None:
        _compiled_cross_entropy = torch.compile(token_cross_entropy, dynamic=False)
    return _compiled_cross_entropy


def mad_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CrossEntropy(ignore_index=-100) over the flattened logits (+ MoE aux loss, 0 otherwise).
    The loss is compiled along with a compiled model (grid.models.compile.is_compiled)."""
    from grid.models.compile import is_compiled  # noqa: PLC0415

    logits = model(x)
    loss = (compiled_cross_entropy() if is_compiled(model) else token_cross_entropy)(logits, y)
    aux = getattr(model, "aux_loss", 0.0)
    return loss + aux if torch.is_tensor(aux) else loss
