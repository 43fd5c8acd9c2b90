"""Trial identity: THE function that makes a `trial_key`, for every suite.

A suite turns its config into trial specs whose config has two blocks (grid/run/spec.py):
the *hashed* block holds everything that can change a result (model as it will be built, recipe or
protocol, data hash, seed, env profile, the device class the trial runs on, compile where it takes
effect) and the *runtime* block how and where it runs (paths, GPUs, packing, CUDA graphs). Only
the hashed block enters the key:

    trial_key(suite, hashed) = content_hash({**hashed, "suite": suite})

LM grids, MAD sweeps, lm-eval rows and any new suite call `trial_key`; nothing else hashes a trial.
`python -m grid results rekey` moves a store made under an earlier rule onto this one
(grid/results/rekey.py; docs/architecture.md says why keys changed).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# where a trial runs, as far as its numbers are concerned: a CPU run (fp32, reference kernels) and a GPU
# run (bf16 autocast, fused kernels where they pass the parity gate) of one config are different trials
DEVICE_CLASSES: tuple[str, ...] = ("cpu", "cuda")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs give byte-equal strings.

    Pydantic models are dumped in JSON mode first; floats keep Python's shortest repr.
    """
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(obj: Any, length: int = 16) -> str:
    """Hex sha256 of the canonical JSON, truncated (16 hex chars = 64 bits: no collisions at grid sizes)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def trial_key(suite: str, hashed: Mapping[str, Any]) -> str:
    """The trial_key of a trial of `suite` whose hashed block is `hashed` (the one rule, every suite)."""
    if not isinstance(suite, str) or not suite:
        raise ValueError(f"suite must be a non-empty string, got {suite!r}")
    if hashed.get("suite", suite) != suite:
        raise ValueError(f"hashed block names suite {hashed['suite']!r}, the trial is in suite {suite!r}")
    return content_hash({**hashed, "suite": suite})


def device_class(gpus: float) -> str:
    """The device class of a trial that holds `gpus` GPUs (fractions included): 'cuda' or 'cpu'."""
    return "cuda" if gpus > 0 else "cpu"


def device_class_of(device: str | None) -> str | None:
    """The device class of a device string as rows record it ('cpu', 'cuda', 'cuda:1', 'cuda (NVIDIA H200)');
    None when it says nothing."""
    if not device:
        return None
    head = str(device).strip().split()[0].split(":")[0].lower()
    return head if head in DEVICE_CLASSES else None


__all__ = ["DEVICE_CLASSES", "canonical_json", "content_hash", "device_class", "device_class_of", "trial_key"]
