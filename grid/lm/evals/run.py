"""Score a model on the recall evaluations of an `evals` block: the one entry point is `run_evals`.

    scores = run_evals(model, config["evals"], data_dir, trained_len=seq_len, device=device, precision="bf16")

Sequences come from grid/lm/evals/tasks.py (held-out text = the data dir's val split); the model is
any module mapping token ids [B, L] to logits [B, L, V]; our LM (grid/models/stack.py) is run as
hidden states -> head on the scored positions only, so long sequences with big vocabularies stay
small. Batched, under the trial's autocast on GPU, fp32 on CPU, in eval mode and without gradients.
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from grid.data import TokenShards, load_tokenizer
from grid.keys import canonical_json
from grid.lm.evals.spec import EvalsSpec
from grid.lm.evals.tasks import EvalSet, IGNORE, copy_sets, mqar_sets, needle_sets, usable_ids
from grid.results.schema import COPY_ACC, COPY_ACC_BEYOND, EVALS_SECONDS, MQAR_ACC, NEEDLE_LOSS


def _heldout_reader(val):
    """(rng, length) -> tokens of the val split at a random offset (the split repeated if it is too short)."""
    def read(rng: np.random.Generator, length: int) -> np.ndarray:
        if length <= 0:
            return np.empty(0, dtype=np.int64)
        if val.tokens >= length:
            return val.read(int(rng.integers(0, val.tokens - length + 1)), length)
        reps = -(-length // val.tokens)
        return np.tile(val.read(0, val.tokens), reps)[:length]
    return read


@functools.lru_cache(maxsize=4)
def _sets_cached(spec_json: str, data_dir: str, trained_len: int) -> tuple[EvalSet, ...]:
    return tuple(build_sets(EvalsSpec.model_validate_json(spec_json), data_dir, trained_len))


def build_sets(spec: EvalsSpec, data_dir: str | Path, trained_len: int) -> list[EvalSet]:
    """Every evaluation sequence of `spec` for the prepared data in `data_dir` (deterministic)."""

    val = TokenShards(data_dir, "val")
    spec.check_vocab(val.vocab_size)
    ids = usable_ids(val.vocab_size, val.eos_id)
    heldout = _heldout_reader(val)
    sets: list[EvalSet] = []
    if spec.in_context_copy is not None:
        sets += copy_sets(spec.in_context_copy, spec.seed, ids, heldout, trained_len)
    if spec.associative_recall is not None:
        sets += mqar_sets(spec.associative_recall, spec.seed, ids)
    if spec.needle is not None:
        tok = load_tokenizer(data_dir, val.manifest["tokenizer"])
        sets += needle_sets(spec.needle, spec.seed, ids, heldout, tok.encode)
    return sets


def _logits_at(model, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits [n, V] at the positions where mask is set."""
    if hasattr(model, "hidden") and hasattr(model, "lm_head"):
        return model.lm_head(model.hidden(x)[mask])
    return model(x)[mask]


@torch.no_grad()
def score_set(model, s: EvalSet, batch_size: int, device, autocast_dtype=None) -> float:
    """Accuracy or mean loss of `model` on one EvalSet."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for lo in range(0, len(s.inputs), batch_size):
        x = torch.from_numpy(s.inputs[lo:lo + batch_size]).to(device)
        y = torch.from_numpy(s.labels[lo:lo + batch_size]).to(device)
        mask = y != IGNORE
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = _logits_at(model, x, mask)
        logits, target = logits.float(), y[mask]
        if s.metric == "acc":
            total += (logits.argmax(-1) == target).sum()
        else:
            total += F.cross_entropy(logits, target, reduction="sum").double()
        count += int(mask.sum())
    return float(total.item()) / count if count else float("nan")


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def summarise(sets: list[EvalSet], scores: dict[str, float]) -> dict[str, float]:
    """The summary columns (schema.RECALL_COLUMNS) of the per-setting scores that exist."""
    groups = {COPY_ACC: [], COPY_ACC_BEYOND: [], MQAR_ACC: [], NEEDLE_LOSS: []}
    for s in sets:
        if s.column.startswith("copy_"):
            groups[COPY_ACC_BEYOND if s.beyond_context else COPY_ACC].append(scores[s.column])
        elif s.column.startswith("mqar_"):
            groups[MQAR_ACC].append(scores[s.column])
        else:
            groups[NEEDLE_LOSS].append(scores[s.column])
    return {name: m for name, vals in groups.items() if vals and (m := _mean(vals)) is not None}


def run_evals(model, evals: EvalsSpec | dict[str, Any], data_dir: str | Path, *, trained_len: int,
              device=None, precision: str = "fp32") -> dict[str, float]:
    """Every score of the block (one column per setting, the summaries, and evals_s)."""
    t0 = time.perf_counter()
    spec = evals if isinstance(evals, EvalsSpec) else EvalsSpec.model_validate(evals)
    device = device if device is not None else next(model.parameters()).device
    device = torch.device(device)
    dtype = torch.bfloat16 if precision == "bf16" and device.type == "cuda" else None
    sets = _sets_cached(canonical_json(spec), str(Path(data_dir).resolve()), int(trained_len))
    was_training = model.training
    model.eval()
    try:
        scores = {s.column: score_set(model, s, spec.batch_size, device, dtype) for s in sets}
    finally:
        model.train(was_training)
    return {**scores, **summarise(list(sets), scores), EVALS_SECONDS: time.perf_counter() - t0}


__all__ = ["build_sets", "run_evals", "score_set", "summarise"]
