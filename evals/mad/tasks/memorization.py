"""Memorization (M): a fixed key -> value map learned across examples, spec mad.md §3.4."""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from evals.mad.tasks.registry import IGNORE, Instance, Need, Task, register


@functools.lru_cache(maxsize=16)
def memorization_map(vocab_size: int, seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (keys, values) map: keys[i] -> values[i], keys in mad-lab's (shuffled) dict order.

    Built from its own Generator(seed): shuffle the key list, then the value list, zip (truncates to
    the number of keys). Identical for train and test (spec §3.4).
    """
    map_rng = np.random.default_rng(seed)
    non_special = vocab_size - 1
    keys = np.arange(non_special // 2, dtype=np.int64)
    values = np.arange(non_special // 2, non_special, dtype=np.int64)
    map_rng.shuffle(keys)
    map_rng.shuffle(values)
    keys.setflags(write=False)
    values = values[: len(keys)]
    values.setflags(write=False)
    return keys, values


def memorization(
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 256,
    seq_len: int = 32,
    seed: int = 12345,
    **_: Any,
) -> Instance:
    """(key, insert-token) pairs; the target at each insert token is the key's fixed value. No shift."""
    keys, values = memorization_map(vocab_size, seed)
    num_pairs = seq_len // 2
    rng.integers(0, num_pairs)  # mad-lab's unused not_noise_idx draw
    idx = [int(rng.integers(0, len(keys))) for _ in range(num_pairs)]  # one call per pair, like the loop
    inputs = np.full(2 * num_pairs, vocab_size - 1, dtype=np.int64)
    targets = np.full(2 * num_pairs, IGNORE, dtype=np.int64)
    inputs[0::2] = keys[idx]
    targets[1::2] = values[idx]
    return inputs, targets


def check_memorization(s, need: Need) -> None:
    need(s.seq_len % 2 == 0, "seq_len", "must be even ((key, insert-token) pairs)")
    need(s.vocab_size >= 4, "vocab_size", "must be >= 4 (keys, values and the insert token)")


TASK = register(Task("memorization", "M", 3, memorization, check_memorization))
