"""AdamW with parameter groups, and learning-rate schedules as plain functions of the step.

Schedules are small frozen dataclasses with `__call__(step) -> lr`: picklable (they travel to Ray
workers inside configs), printable, and pure (the lr of a step never depends on history, so a
resumed run gets exactly the lrs of a straight run). `grid.train.loop.train` writes
`schedule(step)` into every param group before each optimizer step.

Weight decay policy:
* `no_decay=False` decays every parameter (MAD, as mad-lab's main branch does: spec/mad.md §5.1).
* `no_decay=True` (LM pretraining) exempts norm gains, biases, embeddings, every tensor with fewer
  than 2 dims (decay rates A_log, D, dt_bias, mixing coefficients ...) and every parameter that
  carries `_no_weight_decay = True` (the flag fla layers set on such tensors).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)) or "Norm" in type(module).__name__


def split_decay(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(decay, no_decay) lists of (name, param) under the LM policy; shared (tied) tensors appear once."""
    exempt: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Embedding) or _is_norm(module):
            exempt.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if (id(p) in exempt or p.ndim < 2 or name.endswith(".bias") or name == "bias"
                or getattr(p, "_no_weight_decay", False)):
            no_decay.append((name, p))
        else:
            decay.append((name, p))
    return decay, no_decay


def param_groups(model: nn.Module, weight_decay: float, no_decay: bool = False) -> list[dict]:
    """AdamW param groups. Every group carries a `names` list (for inspection and tests)."""
    if not no_decay:
        named, seen = [], set()
        for name, p in model.named_parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                named.append((name, p))
        return [{"params": [p for _, p in named], "names": [n for n, _ in named], "weight_decay": weight_decay}]
    decay, exempt = split_decay(model)
    groups = [{"params": [p for _, p in decay], "names": [n for n, _ in decay], "weight_decay": weight_decay},
              {"params": [p for _, p in exempt], "names": [n for n, _ in exempt], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_adamw(model: nn.Module, lr: float, weight_decay: float = 0.0, *, no_decay: bool = False,
                betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, fused: bool | None = None
                ) -> torch.optim.AdamW:
    """AdamW over `model`'s parameters (torch defaults for betas/eps, as mad-lab)."""
    groups = param_groups(model, weight_decay, no_decay)
    if fused is None:  # the fused CUDA kernel: fewer launches, same math
        fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused or None)


# ---------------------------------------------------------------------------------------- schedules

@dataclass(frozen=True)
class Constant:
    lr: float

    def __call__(self, step: int) -> float:
        return self.lr


@dataclass(frozen=True)
class CosinePerEpoch:
    """torch CosineAnnealingLR(T_max=epochs, eta_min=min_lr) stepped once per epoch, no warmup (MAD).

    The lr is constant within an epoch: lr(e) = min_lr + (base_lr - min_lr) * (1 + cos(pi e / epochs)) / 2
    with e = step // steps_per_epoch (the closed form of CosineAnnealingLR's recursion).
    """

    base_lr: float
    min_lr: float
    epochs: int
    steps_per_epoch: int

    def __call__(self, step: int) -> float:
        e = min(step // self.steps_per_epoch, self.epochs)
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * e / self.epochs)) / 2


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warmup to `peak_lr` over `warmup_steps`, then cosine to `final_frac * peak_lr` at `total_steps`
    (flame's recipe: warmup ~1k steps, cosine to 10% of peak). Steps past the end stay at the floor."""

    peak_lr: float
    warmup_steps: int
    total_steps: int
    final_frac: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        floor = self.final_frac * self.peak_lr
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return floor + (self.peak_lr - floor) * (1 + math.cos(math.pi * t)) / 2


def set_lr(optimizer: torch.optim.Optimizer, lr: float, groups: Iterable[dict] | None = None) -> None:
    for g in (groups if groups is not None else optimizer.param_groups):
        g["lr"] = lr
