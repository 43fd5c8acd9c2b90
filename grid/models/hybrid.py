"""Where the softmax-attention layers of a hybrid go.

`hybrid` is one of:
  * "pure"     : every layer uses the model's mixer;
  * "r:1"      : r mixer layers then one softmax-attention layer, repeated from the bottom: layer i
                 (0-based) is attention iff (i + 1) % (r + 1) == 0. When n_layers is not a multiple
                 of r + 1 the leftover top layers (n_layers % (r + 1) of them) are mixer layers, so
                 the effective ratio can differ from the nominal one; both are recorded. A rule that
                 places no attention layer at all (r + 1 > n_layers) is an error: say it with an
                 explicit list instead.
  * [i, j, …]  : explicit 0-based attention layer indices.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from grid.models.errors import ConfigError

_RATIO = re.compile(r"^\s*(\d+)\s*:\s*1\s*$")


@dataclass(frozen=True)
class HybridLayout:
    n_layers: int
    attention_layers: tuple[int, ...]
    nominal: str  # "pure", "3:1" or "explicit"

    @property
    def mixer_layers(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.n_layers) if i not in self.attention_layers)

    @property
    def effective_ratio(self) -> float | None:
        """mixer layers per attention layer (None for pure)."""
        n_attn = len(self.attention_layers)
        return None if n_attn == 0 else (self.n_layers - n_attn) / n_attn

    @property
    def effective(self) -> str:
        r = self.effective_ratio
        if r is None:
            return "pure"
        return f"{r:g}:1"

    def is_attention(self, i: int) -> bool:
        return i in self.attention_layers


def parse_ratio(hybrid: str) -> int | None:
    m = _RATIO.match(hybrid)
    return int(m.group(1)) if m else None


def layout(hybrid: str | list[int], n_layers: int) -> HybridLayout:
    if isinstance(hybrid, list):
        bad = [i for i in hybrid if not 0 <= i < n_layers]
        if bad:
            raise ConfigError("hybrid", hybrid, f"layer indices in [0, {n_layers - 1}]", hint=f"out of range: {bad}")
        if len(set(hybrid)) != len(hybrid):
            raise ConfigError("hybrid", hybrid, "distinct layer indices", hint="duplicates")
        return HybridLayout(n_layers, tuple(sorted(hybrid)), "explicit")
    if hybrid == "pure":
        return HybridLayout(n_layers, (), "pure")
    r = parse_ratio(hybrid)
    if r is None or r < 1:
        raise ConfigError("hybrid", hybrid, '"pure", "r:1" with integer r >= 1 (e.g. "3:1"), or a list of layer indices')
    attn = tuple(i for i in range(n_layers) if (i + 1) % (r + 1) == 0)
    if not attn:
        raise ConfigError("hybrid", hybrid, f'r:1 with r + 1 <= n_layers={n_layers}, or an explicit list',
                          hint=f"{hybrid} places no attention layer in {n_layers} layers")
    return HybridLayout(n_layers, attn, f"{r}:1")
