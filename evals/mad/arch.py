"""Named MAD architectures: `configs/mad/architectures.yaml` -> ModelConfig of the MAD backbone.

    arch_names() -> list[str]
    arch_entry(arch) -> dict                      (mixer, mixer_kwargs, stack, source)
    arch_model_config(arch, vocab_size, seq_len, *, backend="auto", layer_settings=None) -> ModelConfig

`layer_settings` overlays the entry's mixer_kwargs (one-off sweeps); an unknown arch raises a
ConfigError listing the allowed names, an unknown kwarg the registry's allowed keys.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from evals.mad.backbones import mad_model_config
from grid.models import ConfigError, ModelConfig

# Resolved from this file, never from the working directory (mad-lab's pitfall, spec/mad.md §8.8).
ARCH_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "mad" / "architectures.yaml"
_ENTRY_KEYS = {"mixer", "mixer_kwargs", "stack", "source"}
_STACK_KEYS = {"n_layers", "ffn", "hybrid", "attn_kwargs"}  # the width stays MAD's 128


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(Path(path).read_text()) or {}
    if set(doc) != {"architectures"}:
        raise ValueError(f"{path}: top level must be exactly 'architectures', got {sorted(doc)}")
    archs = doc["architectures"] or {}
    for name, entry in archs.items():
        extra = set(entry) - _ENTRY_KEYS
        if extra or "mixer" not in entry:
            raise ValueError(f"{path}: architecture {name!r}: needs 'mixer'; unknown keys {sorted(extra)}; "
                             f"allowed: {sorted(_ENTRY_KEYS)}")
        bad = set(entry.get("stack") or {}) - _STACK_KEYS
        if bad:
            raise ValueError(f"{path}: architecture {name!r}: stack keys {sorted(bad)} not allowed; "
                             f"allowed: {sorted(_STACK_KEYS)}")
    return archs


def load_architectures(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    return dict(_load(str(Path(path).resolve()) if path is not None else str(ARCH_CONFIG)))


def arch_names(path: str | Path | None = None) -> list[str]:
    return list(load_architectures(path))


def arch_entry(arch: str, path: str | Path | None = None) -> dict[str, Any]:
    archs = load_architectures(path)
    if arch not in archs:
        raise ConfigError("arch", arch, list(archs), hint=f"named MAD architectures of {path or ARCH_CONFIG}")
    entry = archs[arch]
    return {"mixer": entry["mixer"], "mixer_kwargs": dict(entry.get("mixer_kwargs") or {}),
            "stack": dict(entry.get("stack") or {}), "source": entry.get("source", "")}


def arch_model_config(arch: str, vocab_size: int, seq_len: int, *, backend: str = "auto",
                      layer_settings: dict[str, Any] | None = None, path: str | Path | None = None) -> ModelConfig:
    """The MAD LM backbone config of a named architecture (the AutoEncoder reuses it for compression)."""

    entry = arch_entry(arch, path)
    kwargs = {**entry["mixer_kwargs"], **(layer_settings or {})}
    return mad_model_config(entry["mixer"], kwargs, vocab_size, seq_len, backend=backend, **entry["stack"])
