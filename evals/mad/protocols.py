"""MAD protocols: what one MAD run executes, by name. The ONE place these rules live (docs/mad.md
cites each rule's source in mad-lab).

* `madlab` (default): what mad-lab's code executes (athms/mad-lab main 0f49a45 under Lightning 2.x):
  - constant learning rate: `configure_optimizers` returns its CosineAnnealingLR under the key
    'scheduler', and Lightning reads a scheduler from a returned dict only under 'lr_scheduler',
    so the schedule is never stepped;
  - init, LM backbone (`LanguageModel._init_weights` via `self.apply`): every Linear bias zeroed
    unless flagged `_no_reinit`, every Embedding ~ N(0, 0.02); every other weight (Linear and Conv1d
    weights, those inside the mixers included) keeps its constructor's default;
  - init, AutoEncoder (compression; `AutoEncoder._init_weights`): every Linear weight and every
    Embedding ~ N(0, 0.02), every Linear bias zeroed (no `_no_reinit` exception), the encoder's
    mixers included; Conv1d and the rest keep their constructor's default;
  - AutoEncoder pooling: the raw residual stream at the last position (no final norm), decoded with
    mad-lab's sin-cos table (`posemb_sincos_1d`: frequencies exp(-log(10000) i / (half - 1)), sin
    half then cos half);
  - early stop when the epoch's test accuracy is strictly above 0.999 (Lightning's EarlyStopping
    `stopping_threshold` compares with `torch.gt` in mode 'max');
  - a run whose loss turns non-finite reports its pre-divergence best (the min-test-perplexity
    checkpoint: Lightning's ModelCheckpoint ranks NaN as +inf); a run that never had a finite
    evaluation has no score and is dropped from the averages (mad-lab's analysis drops NaN rows).
* `cosine`: "mad-lab as its config describes it, not as it runs": CosineAnnealingLR(T_max=epochs,
  eta_min=min_lr) stepped per epoch, the project's one init (grid/models/init.py), the AutoEncoder
  pooling the final-normed stream with an interleaved sin-cos table, stop at >= 0.999, and a
  diverged run scores 0. This is what lingrid ran before the `madlab` protocol existed: rows
  without a `protocol` column are `cosine` rows.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from grid.models import ConfigError

ProtocolName = Literal["madlab", "cosine"]
DEFAULT_PROTOCOL: ProtocolName = "madlab"
LEGACY_PROTOCOL: ProtocolName = "cosine"  # rows written before the column existed
MADLAB_INIT_STD = 0.02  # mad-lab's `initializer_range`


@dataclass(frozen=True)
class MADProtocol:
    name: str
    summary: str
    schedule: Literal["constant", "cosine-per-epoch"]
    init: Literal["madlab", "project"]
    autoencoder_pool: Literal["raw", "final-norm"]
    autoencoder_positions: Literal["madlab", "interleaved"]
    stop_strict: bool  # stop when acc > threshold (True) or acc >= threshold (False)
    diverged: Literal["pre-divergence-best", "zero"]

    def should_stop(self, acc: float, threshold: float) -> bool:
        return acc > threshold if self.stop_strict else acc >= threshold


PROTOCOLS: dict[str, MADProtocol] = {
    "madlab": MADProtocol(
        name="madlab", summary="mad-lab as its code executes: constant lr, mad-lab's init, raw-stream pooling",
        schedule="constant", init="madlab", autoencoder_pool="raw", autoencoder_positions="madlab",
        stop_strict=True, diverged="pre-divergence-best"),
    "cosine": MADProtocol(
        name="cosine", summary="mad-lab as its config describes it (cosine lr per epoch), the project's init",
        schedule="cosine-per-epoch", init="project", autoencoder_pool="final-norm",
        autoencoder_positions="interleaved", stop_strict=False, diverged="zero"),
}


def get_protocol(name: str) -> MADProtocol:
    if name not in PROTOCOLS:
        raise ConfigError("protocol", name, list(PROTOCOLS))
    return PROTOCOLS[name]


# ------------------------------------------------------------------------------------------ init

@torch.no_grad()
def madlab_lm_init(model: nn.Module, std: float = MADLAB_INIT_STD) -> None:
    """mad-lab's `LanguageModel._init_weights`, applied to every module (mixers included)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if m.bias is not None and not getattr(m.bias, "_no_reinit", False):
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)


@torch.no_grad()
def madlab_autoencoder_init(model: nn.Module, std: float = MADLAB_INIT_STD) -> None:
    """mad-lab's `AutoEncoder._init_weights`, applied to every module (the encoder's mixers included)."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)


def init_rule(protocol: MADProtocol, autoencoder: bool) -> Callable[[nn.Module], None] | None:
    """The init a protocol applies after construction (None: the project's init, applied by the stack)."""
    if protocol.init == "project":
        return None
    return madlab_autoencoder_init if autoencoder else madlab_lm_init


# ------------------------------------------------------------------------------ position tables

def madlab_sincos(length: int, dim: int) -> torch.Tensor:
    """mad-lab's decoder table [length, dim]: sin of all frequencies, then cos (zero pad if dim is odd)."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -step)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length, 1)], dim=1)
    return table


def interleaved_sincos(length: int, dim: int) -> torch.Tensor:
    """The `cosine` protocol's table [length, dim]: sin on even channels, cos on odd ones."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


def position_table(protocol: MADProtocol, length: int, dim: int) -> torch.Tensor:
    return (madlab_sincos if protocol.autoencoder_positions == "madlab" else interleaved_sincos)(length, dim)
