"""Fuzzy in-context recall (FR): recall of multi-token motifs, spec mad.md §3.3."""
from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np

from evals.mad.tasks.registry import IGNORE, Instance, Need, Task, as_arrays, register


@functools.lru_cache(maxsize=64)
def _motifs(first: int, stop: int, size: int) -> list[tuple[int, ...]]:
    """All ordered motifs of `size` distinct tokens from range(first, stop), in itertools order."""
    return list(itertools.permutations(range(first, stop), size))


def _shuffled_motifs(rng: np.random.Generator, first: int, stop: int, size: int) -> tuple[list, np.ndarray]:
    """(cached motif list, shuffled index order): same RNG draws as mad-lab's build-then-shuffle of the list.

    Shuffling an index array of the same length consumes the stream identically to shuffling the list
    (module docstring) and costs one C loop instead of rebuilding ~250k tuples per instance at V=128.
    """
    motifs = _motifs(first, stop, size)
    return motifs, rng.permutation(len(motifs))  # == shuffling np.arange(len), draw for draw


def fuzzy_in_context_recall(
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 16,
    seq_len: int = 128,
    k_motif_size: int = 3,
    v_motif_size: int = 3,
    **_: Any,
) -> Instance:
    """Fuzzy (motif) recall, multi-query form only (spec §3.3); output length seq_len, left-padded."""
    pad = vocab_size - 1
    non_special = vocab_size - 1
    n_key_tok = non_special // 2
    integers = rng.integers

    # 1. motif lists, shuffled in mad-lab's order: key lengths, then value lengths 1..v_motif_size.
    # Test keys are always of the maximum length.
    key_sizes = list(range(1, k_motif_size + 1)) if is_training else [k_motif_size]
    val_sizes = list(range(1, v_motif_size + 1))
    keys = {s: _shuffled_motifs(rng, 0, n_key_tok, s) for s in key_sizes}
    values = {s: _shuffled_motifs(rng, n_key_tok, non_special, s) for s in val_sizes}

    def draw(table: dict, size: int) -> tuple[int, ...]:
        motifs, order = table[size]
        return motifs[order[integers(0, len(order))]]

    # 2. the probe; in test its key length is fixed, so no draw (spec §3.3 step 2)
    kp_size = key_sizes[integers(0, len(key_sizes))] if is_training else k_motif_size
    vp_size = val_sizes[integers(0, len(val_sizes))]
    k_probe = draw(keys, kp_size)
    v_probe = draw(values, vp_size)
    probe_len = kp_size + vp_size
    probe_idx = int(integers(0, seq_len - 2 * probe_len))

    # 3. random pairs. One key->value dict serves all key lengths: tuples of different lengths never
    # collide, so this equals mad-lab's per-length maps.
    kv_map: dict[tuple, tuple] = {}
    presented: set[tuple] = set()
    placed = False
    inputs: list[int] = []
    targets: list[int] = []
    stop = seq_len - probe_len - (k_motif_size + v_motif_size)
    while len(inputs) < stop:
        k_size = key_sizes[integers(0, len(key_sizes))] if is_training else k_motif_size
        v_size = val_sizes[integers(0, len(val_sizes))]  # drawn every step, even when unused
        if not placed and len(inputs) >= probe_idx:
            inputs.extend(k_probe + v_probe)
            targets.extend([IGNORE] * probe_len)
            presented.add(k_probe)
            placed = True
            continue
        k = draw(keys, k_size)
        if k == k_probe:
            v = v_probe
            placed = True
        else:
            v = kv_map.get(k)
            if v is None:
                v = kv_map[k] = draw(values, v_size)
        inputs.extend(k + v)
        targets.extend([IGNORE] * len(k))
        targets.extend(v if k in presented else [IGNORE] * len(v))
        presented.add(k)

    # 4. the final query (its value is a target even if the probe was never placed: a reference quirk)
    inputs.extend(k_probe + v_probe)
    targets.extend([IGNORE] * kp_size + list(v_probe))

    # 5. left-pad to seq_len + 1, then shift
    n_pad = seq_len + 1 - len(inputs)
    raw_in, raw_tg = as_arrays([pad] * n_pad + inputs, [IGNORE] * n_pad + targets)
    return raw_in[:-1], (raw_in[1:] if is_training else raw_tg[1:])


def check_fuzzy(s, need: Need) -> None:
    need(s.multi_query, "multi_query", "must be True (only the multi-query form is specified)")
    n_key, n_val = (s.vocab_size - 1) // 2, (s.vocab_size - 1) - (s.vocab_size - 1) // 2
    need(n_key >= s.k_motif_size and n_val >= s.v_motif_size, "vocab_size",
         f"needs >= {s.k_motif_size} key and >= {s.v_motif_size} value tokens (motifs use distinct tokens)")
    need(s.seq_len > 2 * (s.k_motif_size + s.v_motif_size), "seq_len",
         f"must be > 2*(k_motif_size+v_motif_size) = {2 * (s.k_motif_size + s.v_motif_size)}")


TASK = register(Task("fuzzy-in-context-recall", "FR", 2, fuzzy_in_context_recall, check_fuzzy))
