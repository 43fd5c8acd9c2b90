"""In-context recall (CR): multi-query associative recall, spec mad.md §3.1; the generator also serves NR."""
from __future__ import annotations

from typing import Any

import numpy as np

from evals.mad.tasks.registry import IGNORE, Instance, Need, Task, as_arrays, register


def in_context_recall(
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 16,
    seq_len: int = 128,
    frac_noise: float = 0.0,
    noise_vocab_size: int = 0,
    multi_query: bool = True,
    **_: Any,
) -> Instance:
    """Multi-query associative recall; with frac_noise > 0 this is noisy recall (spec §3.1, §3.2)."""
    non_special = (vocab_size if multi_query else vocab_size - 1) - noise_vocab_size
    n_keys = non_special // 2
    n_values = non_special - n_keys
    copy_prefix = vocab_size - 1  # only used without multi-query
    num_pairs = seq_len // 2
    integers, random = rng.integers, rng.random

    not_noise_idx = int(integers(0, num_pairs))  # always drawn, even without noise (spec §3.1 step 1)
    kv_map: dict[int, int] = {}
    presented: dict[int, int] = {}  # insertion order = first-appearance order, used by the probe draw
    inputs: list[int] = []
    targets: list[int] = []
    for i in range(num_pairs - 1):
        # the noise coin is only flipped when it can matter (python evaluates the condition first)
        if frac_noise > 0 and i != not_noise_idx and random() < frac_noise:
            # one call with size=2, as `rng.choice(noise_vocab, size=2)`; noise tokens sit above keys+values
            inputs.extend((non_special + integers(0, noise_vocab_size, size=2)).tolist())
            targets.extend((IGNORE, IGNORE))
            continue
        k = int(integers(0, n_keys))
        v = kv_map.get(k)
        if v is None:
            v = kv_map[k] = n_keys + int(integers(0, n_values))
        inputs.extend((k, v))
        targets.extend((IGNORE, v if (multi_query and k in presented) else IGNORE))
        presented[k] = v

    if not presented:
        # mad-lab crashes here too (choice from an empty list); ~0.8**63 per sequence at frac_noise 0.8
        raise RuntimeError("in_context_recall: every pair slot became noise; no key to probe")
    keys = list(presented)
    k_probe = keys[int(integers(0, len(keys)))]
    v_probe = presented[k_probe]
    if not multi_query:
        inputs.append(copy_prefix)
        targets.append(IGNORE)
    inputs.extend((k_probe, v_probe))
    targets.extend((IGNORE, v_probe))

    raw_in, raw_tg = as_arrays(inputs, targets)
    # autoregressive shift; training predicts every next token
    return raw_in[:-1], (raw_in[1:] if is_training else raw_tg[1:])


def check_recall(s, need: Need) -> None:
    """Constraints of the recall generator (CR and NR)."""
    need(s.seq_len % 2 == 0 and s.seq_len >= 4, "seq_len", "must be even and >= 4 (L/2 key-value pairs)")
    need(s.frac_noise == 0 or s.noise_vocab_size > 0, "noise_vocab_size", "must be > 0 when frac_noise > 0")
    non_special = s.vocab_size - (0 if s.multi_query else 1) - s.noise_vocab_size
    need(non_special >= 2, "vocab_size",
         f"must leave >= 2 key/value tokens after {s.noise_vocab_size} noise tokens"
         + ("" if s.multi_query else " and the copy-prefix token"))


TASK = register(Task("in-context-recall", "CR", 0, in_context_recall, check_recall, noise=True))
