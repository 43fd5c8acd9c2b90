"""MAD backbones built from the project's one LM stack (spec/mad.md §4; docs/mad.md).

* LM backbone (every task but compression): `build_model(cfg)` with MAD's shape: width 128,
  [mixer, SwiGLU, mixer, SwiGLU] = 2 blocks of our stack, SwiGLU inner width 352
  (hidden_ratio 4 -> int(8d/3) = 341 rounded up to a multiple of 16), RMSNorm eps 1e-5, final
  RMSNorm, untied head Linear(d -> V) with bias, no positional embedding (positions come from the
  mixers, e.g. RoPE in attention). `mad_model_config` fills these in.
* AutoEncoder (compression): encoder = our stack's embedding and blocks; pool the last position (the
  compression token); broadcast to L positions + fixed sin-cos position embeddings; MLP RMSNorm ->
  Linear -> GELU -> RMSNorm -> Linear -> GELU; then RMSNorm -> Linear d -> V (with bias).

The protocol (evals/mad/protocols.py) owns the init, the pooled stream (raw residual for `madlab`,
final-normed for `cosine`) and the decoder's sin-cos table. Where the backbone still differs from
mad-lab's: mad-lab's own attention layer has qkv/out biases (FlashAttention MHA); lingrid's
architectures follow fla's layers, as lin-attn-bench's adapters do.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.mad.protocols import DEFAULT_PROTOCOL, MADProtocol, get_protocol, init_rule, position_table
from evals.mad.tasks import get_task
from grid.models import ModelConfig, build_model
from grid.models.compile import is_compiled
from grid.models.errors import BackendUnavailable
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


class AutoEncoder(nn.Module):
    """Compression backbone: encode, pool the last position, decode every position from that vector."""

    def __init__(self, cfg: ModelConfig, seq_len: int, protocol: MADProtocol):
        super().__init__()
        d = cfg.d_model
        self.seq_len = seq_len
        self.pool_raw = protocol.autoencoder_pool == "raw"
        self.encoder = build_model(cfg, apply_init=protocol.init == "project")
        self.encoder.lm_head = None  # the encoder's head is unused: no dead parameters
        if self.pool_raw:
            self.encoder.norm = None  # pooled before any final norm (mad-lab): no dead parameters either
        self.register_buffer("positions", position_table(protocol, seq_len, d), persistent=False)
        self.decoder = nn.Sequential(
            RMSNorm(d, eps=cfg.norm_eps), nn.Linear(d, d), nn.GELU(),
            RMSNorm(d, eps=cfg.norm_eps), nn.Linear(d, d), nn.GELU(),
        )
        self.head_norm = RMSNorm(d, eps=cfg.norm_eps)
        self.head = nn.Linear(d, cfg.vocab_size, bias=True)
        rule = init_rule(protocol, autoencoder=True)
        if rule is None:
            init_weights(self.decoder, cfg.init_std)
            init_weights(self.head, cfg.init_std)
        else:
            rule(self)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        L = input_ids.shape[1]
        if L > self.seq_len:
            raise ValueError(f"sequence length {L} > the AutoEncoder's seq_len {self.seq_len}")
        stream = self.encoder.residual(input_ids) if self.pool_raw else self.encoder.hidden(input_ids)
        pooled = stream[:, -1]  # [B, D]
        x = pooled[:, None, :] + self.positions[:L].to(pooled.dtype)  # broadcast to L positions
        return self.head(self.head_norm(self.decoder(x)))

    @property
    def aux_loss(self):
        return self.encoder.aux_loss

    @property
    def backends(self) -> dict[str, str]:
        return self.encoder.backends


def build_backbone(cfg: ModelConfig, task_code: str, seq_len: int, protocol: str = DEFAULT_PROTOCOL) -> nn.Module:
    """LM for every MAD task except compression ('C'), which gets the AutoEncoder; initialised as
    `protocol` says."""
    proto = get_protocol(protocol)
    if get_task(task_code).autoencoder:
        return AutoEncoder(cfg, seq_len, proto)
    rule = init_rule(proto, autoencoder=False)
    model = build_model(cfg, apply_init=rule is None)
    if rule is not None:
        rule(model)
    return model


def backbone_params(cfg: ModelConfig, task_code: str, seq_len: int, protocol: str = DEFAULT_PROTOCOL) -> int | None:
    """Parameters of the backbone `build_backbone` makes (counted on the reference backend, which has the
    fused layers' names and shapes); None when the mixer has no reference backend."""

    try:
        model = build_backbone(cfg.model_copy(update={"backend": "reference"}), task_code, seq_len, protocol)
    except BackendUnavailable:
        return None
    return sum(p.numel() for p in model.parameters())


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

    logits = model(x)
    loss = (compiled_cross_entropy() if is_compiled(model) else token_cross_entropy)(logits, y)
    aux = getattr(model, "aux_loss", 0.0)
    return loss + aux if torch.is_tensor(aux) else loss
