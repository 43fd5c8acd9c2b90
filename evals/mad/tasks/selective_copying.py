"""Selective copying (SC): copy the data tokens scattered among blanks, spec mad.md §3.6."""
from __future__ import annotations

from typing import Any

import numpy as np

from evals.mad.tasks.registry import IGNORE, Instance, Need, Task, register


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


def check_selective_copying(s, need: Need) -> None:
    need(s.vocab_size >= 3, "vocab_size", "must be >= 3 (data, blank and copy tokens)")
    need(s.num_tokens_to_copy >= 1, "num_tokens_to_copy", "must be >= 1")
    if s.num_tokens_to_copy >= 1:
        need(s.seq_len > 2 * s.num_tokens_to_copy + 1, "seq_len",
             f"must be > 2*num_tokens_to_copy+1 = {2 * s.num_tokens_to_copy + 1}")


TASK = register(Task("selective-copying", "SC", 5, selective_copying, check_selective_copying, legacy_rng=True))
