"""Evaluation sequences: numpy only, a pure function of (spec, seed, held-out text, tokenizer ids).

Every task returns `EvalSet`s: `inputs` [N, L] token ids and `labels` [N, L] holding, at position t,
the token the model should predict from inputs[:, :t+1] (IGNORE where nothing is scored), as in
Zoology's data. Random tokens come from the usable ids (every id but eos). Each setting has its own
generator, seeded from (evals seed, task, setting), so adding a setting leaves the others' data unchanged.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from grid.lm.evals.spec import CopySpec, MQARSpec, NeedleSpec
from grid.results.schema import copy_column, mqar_column, needle_column

IGNORE = -100
TASK_IDS = {"copy": 1, "mqar": 2, "needle": 3}  # part of each setting's seed

# (rng, length) -> `length` consecutive tokens of held-out text starting at a random offset
HeldOut = Callable[[np.random.Generator, int], np.ndarray]


@dataclass
class EvalSet:
    column: str
    metric: str  # "acc": argmax accuracy on the scored positions; "loss": their mean cross-entropy (nats)
    inputs: np.ndarray
    labels: np.ndarray
    beyond_context: bool = False  # longer than the trained context (copy keeps a separate summary)


def rng_for(seed: int, task: str, *setting: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), TASK_IDS[task], *(int(s) for s in setting)])


def usable_ids(vocab_size: int, eos_id: int) -> np.ndarray:
    ids = np.arange(vocab_size, dtype=np.int64)
    return ids[ids != eos_id]


def copy_sets(spec: CopySpec, seed: int, ids: np.ndarray, heldout: HeldOut, trained_len: int) -> list[EvalSet]:
    out = []
    for span, gap in spec.settings:
        rng = rng_for(seed, "copy", span, gap)
        n, length = spec.samples, 2 * span + gap
        inputs = np.empty((n, length), dtype=np.int64)
        labels = np.full((n, length), IGNORE, dtype=np.int64)
        for i in range(n):
            tokens = rng.choice(ids, size=span)
            inputs[i, :span] = tokens
            inputs[i, span:span + gap] = heldout(rng, gap)
            inputs[i, span + gap:] = tokens
        # predict repeat tokens 1..span-1 from the positions before them (repeat token 0 is not scored)
        first = span + gap
        labels[:, first:length - 1] = inputs[:, first + 1:length]
        out.append(EvalSet(copy_column(span, gap), "acc", inputs, labels, beyond_context=length > trained_len))
    return out


def _power_law_offsets(rng: np.random.Generator, space: int, k: int, a: float) -> np.ndarray:
    """k distinct offsets in [0, space), P(i) proportional to a * (i + 1) ** (a - 1) (Zoology's query gaps)."""
    p = a * np.arange(1, space + 1, dtype=np.float64) ** (a - 1)
    return rng.choice(space, size=k, replace=False, p=p / p.sum())


def mqar_sets(spec: MQARSpec, seed: int, ids: np.ndarray) -> list[EvalSet]:
    half = len(ids) // 2
    key_ids, value_ids = ids[:half], ids[half:2 * half]
    out = []
    for n in spec.pairs:
        rng = rng_for(seed, "mqar", n, spec.seq_len)
        m, length = spec.samples, spec.seq_len
        ctx = 2 * n
        space = (length - ctx) // 2
        inputs = np.empty((m, length), dtype=np.int64)
        labels = np.full((m, length), IGNORE, dtype=np.int64)
        for i in range(m):
            keys = rng.choice(key_ids, size=n, replace=False)
            values = rng.choice(value_ids, size=n, replace=False)
            inputs[i, 0:ctx:2], inputs[i, 1:ctx:2] = keys, values
            # the query region: random tokens that are not keys of this sequence (no ambiguous look-ups) ...
            noise = rng.choice(ids, size=length - ctx)
            clash = np.isin(noise, keys)
            while clash.any():
                noise[clash] = rng.choice(ids, size=int(clash.sum()))
                clash = np.isin(noise, keys)
            inputs[i, ctx:] = noise
            # ... with each key once, at an even offset; the value is predicted at the key's position
            pos = ctx + 2 * _power_law_offsets(rng, space, n, spec.power_a)
            inputs[i, pos] = keys
            labels[i, pos] = values
        out.append(EvalSet(mqar_column(n), "acc", inputs, labels, beyond_context=False))
    return out


def needle_sets(spec: NeedleSpec, seed: int, ids: np.ndarray, heldout: HeldOut,
                encode: Callable[[str], list[int]]) -> list[EvalSet]:
    prefix, middle, suffix = (np.asarray(encode(s), dtype=np.int64) for s in (spec.prefix, spec.middle, spec.suffix))
    fact_len = len(prefix) + spec.key_tokens + len(middle) + spec.value_tokens + len(suffix)
    ask_len = len(prefix) + spec.key_tokens + len(middle) + spec.value_tokens
    filler_len = spec.context - fact_len - ask_len
    if filler_len < 1:
        raise ValueError(f"evals.needle.context={spec.context} leaves no room for text around the fact "
                         f"({fact_len} tokens) and the question with its answer ({ask_len}); "
                         f"allowed: context > {fact_len + ask_len}")
    out = []
    for depth in spec.depths:
        rng = rng_for(seed, "needle", round(depth * 100), spec.context)
        m, length = spec.samples, spec.context
        inputs = np.empty((m, length), dtype=np.int64)
        labels = np.full((m, length), IGNORE, dtype=np.int64)
        at = int(round(depth * filler_len))
        for i in range(m):
            key = rng.choice(ids, size=spec.key_tokens)
            value = rng.choice(ids, size=spec.value_tokens)
            filler = heldout(rng, filler_len)
            fact = np.concatenate([prefix, key, middle, value, suffix])
            ask = np.concatenate([prefix, key, middle, value])
            inputs[i] = np.concatenate([filler[:at], fact, filler[at:], ask])
        # the answer: the last value_tokens tokens, each predicted from the position before it
        labels[:, length - spec.value_tokens - 1:length - 1] = inputs[:, length - spec.value_tokens:]
        out.append(EvalSet(needle_column(depth), "loss", inputs, labels))
    return out


__all__ = ["IGNORE", "EvalSet", "copy_sets", "mqar_sets", "needle_sets", "rng_for", "usable_ids"]
