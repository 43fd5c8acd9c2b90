"""Pure-numpy generators for the six MAD tasks (spec mad.md §3), bit-exact to mad-lab's RNG streams.

Every generator returns one instance `(inputs, targets)` as int64 arrays and draws only from the
`rng` it is given (plus numpy's legacy RNG for selective copying, as mad-lab does).

RNG equivalences this module relies on (checked against numpy 2.x, asserted in the tests):
- `rng.choice(n)` and `rng.choice(array_of_len_n)` draw exactly `rng.integers(0, n)`;
  `rng.choice(a, size=k)` draws `rng.integers(0, len(a), size=k)`. So we index with integers.
- `rng.shuffle` runs the same Fisher-Yates loop (one bounded draw per position, last to first) for a
  Python list and for an ndarray, and `rng.permutation(n)` is `shuffle(arange(n))`; so a shuffled
  index array reproduces mad-lab's shuffled list of tuples and leaves the stream in the same state.
"""
from __future__ import annotations

import functools
import itertools
from typing import Any, Callable

import numpy as np

IGNORE = -100  # target ignore index (spec §1)

# registry name -> short code, in mad-lab's registry (sweep) order
TASK_CODES: dict[str, str] = {
    "in-context-recall": "CR",
    "noisy-in-context-recall": "NR",
    "fuzzy-in-context-recall": "FR",
    "memorization": "M",
    "compression": "C",
    "selective-copying": "SC",
}

Instance = tuple[np.ndarray, np.ndarray]


def _as_arrays(inputs: list, targets: list) -> Instance:
    return np.asarray(inputs, dtype=np.int64), np.asarray(targets, dtype=np.int64)


# --------------------------------------------------------------------------- in-context recall (CR, NR)


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

    raw_in, raw_tg = _as_arrays(inputs, targets)
    # autoregressive shift; training predicts every next token
    return raw_in[:-1], (raw_in[1:] if is_training else raw_tg[1:])


# --------------------------------------------------------------------------- fuzzy in-context recall (FR)


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
    raw_in, raw_tg = _as_arrays([pad] * n_pad + inputs, [IGNORE] * n_pad + targets)
    return raw_in[:-1], (raw_in[1:] if is_training else raw_tg[1:])


# --------------------------------------------------------------------------- memorization (M)


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


# --------------------------------------------------------------------------- compression (C)


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


# --------------------------------------------------------------------------- selective copying (SC)


def selective_copying(
    rng: np.random.Generator,
    is_training: bool,
    vocab_size: int = 16,
    seq_len: int = 256,
    num_tokens_to_copy: int = 16,
    legacy_rng: Any = None,
    **_: Any,
) -> Instance:
    """Copy the n data tokens scattered among blanks, after the copy token (spec §3.6). No shift.

    `legacy_rng` places the blanks; None means numpy's global legacy RNG (`np.random`), as in mad-lab.
    A `np.random.RandomState(seed)` gives the same stream as `np.random.seed(seed)` without global state.
    """
    legacy = np.random if legacy_rng is None else legacy_rng
    n = num_tokens_to_copy
    copy_token, blank = vocab_size - 1, vocab_size - 2
    to_copy = rng.integers(0, vocab_size - 2, size=n)
    # every blank goes before an index in [0, n) drawn up front; repeats stack (np.insert semantics).
    # This reading reproduces the spec's §3.7 example; inserting one at a time into the growing list
    # does not.
    where = legacy.randint(0, n, seq_len - 2 * n - 1)
    body = np.insert(to_copy, where, blank)
    inputs = np.concatenate([body, [copy_token], np.full(n, blank)]).astype(np.int64)
    targets = np.concatenate([np.full(seq_len - n, IGNORE), to_copy]).astype(np.int64)
    return inputs, targets


# --------------------------------------------------------------------------- registry and splits

GENERATORS: dict[str, Callable[..., Instance]] = {
    "in-context-recall": in_context_recall,
    "noisy-in-context-recall": in_context_recall,
    "fuzzy-in-context-recall": fuzzy_in_context_recall,
    "memorization": memorization,
    "compression": compression,
    "selective-copying": selective_copying,
}

# the setting fields that reach the generators (spec §2.2)
_KWARG_FIELDS = (
    "vocab_size", "seq_len", "frac_noise", "noise_vocab_size", "num_tokens_to_copy",
    "k_motif_size", "v_motif_size", "multi_query", "seed",
)


def generate_split(setting: Any, rng: np.random.Generator, n: int, is_training: bool,
                   legacy_rng: Any = None) -> Instance:
    """`n` instances of `setting` (any object with the MADSetting fields), stacked to [n, width] int64.

    Train then test must come from the same `rng` (and the same `legacy_rng` for SC) to match mad-lab.
    """
    gen = GENERATORS[setting.task]
    kwargs = {f: getattr(setting, f) for f in _KWARG_FIELDS}
    if setting.task == "selective-copying":
        kwargs["legacy_rng"] = legacy_rng
    pairs = [gen(rng, is_training, **kwargs) for _ in range(n)]
    inputs = np.stack([p[0] for p in pairs]) if pairs else np.empty((0, 0), dtype=np.int64)
    targets = np.stack([p[1] for p in pairs]) if pairs else np.empty((0, 0), dtype=np.int64)
    return inputs, targets
