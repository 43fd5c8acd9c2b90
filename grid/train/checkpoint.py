"""Training checkpoints: what a resumed run needs to continue exactly like a straight run.

A checkpoint state is a plain dict (`format`, `step`, `model`, `optimizer`, `rng`, `loop`) that
`torch.load(weights_only=True)` can read back: RNG states are stored as tensors, lists and ints,
never as pickled numpy objects (the torch >= 2.6 `weights_only` pitfall of mad-lab, spec/mad.md §8.5).

The loop talks to a `Checkpointer` (anything with `save(state)` and `load() -> state | None`);
`DirCheckpointer` writes one file atomically. The Ray runner can wrap its own storage in the same
two methods.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

# Lazy here: copy (one code path)

FORMAT = 1
FILE_NAME = "train_state.pt"


class Checkpointer(Protocol):
    def save(self, state: dict[str, Any]) -> None: ...

    def load(self) -> dict[str, Any] | None: ...


class DirCheckpointer:
    """Keeps the latest state in `<directory>/train_state.pt` (written to a temp file, then renamed)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    @property
    def path(self) -> Path:
        return self.directory / FILE_NAME

    def save(self, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)


class MemoryCheckpointer:
    """Keeps the latest state in memory (tests; a process that restarts the loop itself)."""

    def __init__(self):
        self.state: dict[str, Any] | None = None
        self.saves = 0

    def save(self, state: dict[str, Any]) -> None:
        import copy  # noqa: PLC0415

        self.state = copy.deepcopy(state)
        self.saves += 1

    def load(self) -> dict[str, Any] | None:
        return self.state


def rng_state() -> dict[str, Any]:
    """Python, numpy (global legacy RNG), torch CPU and every CUDA device, in weights_only-safe types."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(np.asarray(key, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(obj: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy/torch scalars converted) so weights_only loads it."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
