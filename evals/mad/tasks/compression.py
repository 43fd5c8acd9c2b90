"""Compression (C): reproduce the sequence from one pooled vector, spec mad.md §3.5; trained as mad-lab's
AutoEncoder (evals/mad/backbones.py), not the LM backbone."""
from __future__ import annotations

from typing import Any

import numpy as np

from evals.mad.tasks.registry import Instance, Need, Task, register


def compression(
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 16,
    seq_len: int = 32,
    **_: Any,
) -> Instance:
    """seq_len-1 random data tokens then the compression token; targets are the inputs (no shift)."""
    data = rng.integers(0, vocab_size - 1, size=seq_len - 1)
    inputs = np.append(data, vocab_size - 1).astype(np.int64)
    return inputs, inputs.copy()


def check_compression(s, need: Need) -> None:
    need(s.vocab_size >= 2 and s.seq_len >= 2, "vocab_size" if s.vocab_size < 2 else "seq_len", "must be >= 2")


TASK = register(Task("compression", "C", 4, compression, check_compression, autoencoder=True))
