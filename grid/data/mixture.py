"""Mixing sources by weight into the train and val token streams.

Algorithm (deterministic; the seed only enters through the split hash, see shards.doc_split):

1. Budgets. With max_tokens T: val total V = val_tokens or round(T * val_fraction), train total T - V.
   Each split's total is apportioned to sources by share = weight / sum(weights) (largest remainder,
   so the per-source budgets add up exactly). Without max_tokens there are no budgets: every source
   is read once, and the achieved shares are whatever the sources hold (reported in the manifest).
2. Interleaving. Repeatedly take the next document from the active source that is furthest behind,
   i.e. with the smallest tokens_written / weight (ties: the earlier source in the spec). So every
   prefix of the stream already has about the requested shares, not only the whole of it.
3. Routing. The document goes to the split chosen by its text hash. If that split's budget for this
   source is already full, the document is skipped (counted). The document that reaches a budget is
   cut to fit exactly (its tail is dropped; eos still follows it), so achieved shares equal requested
   shares up to rounding whenever no source runs short.
4. Running short. A source that ends before its budgets are full is read again from the start
   (on_short="cycle"; passes and epochs are recorded) or left short (on_short="stop"; the achieved
   shares then differ from the requested ones and are reported). A pass that adds no tokens stops
   the source (its remaining budget can never fill: e.g. no document of it hashes into val).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grid.data.shards import SPLITS, ShardWriter, doc_split
from grid.data.sources import SourceError, iter_documents
from grid.data.spec import DataSpec, SourceSpec
from grid.data.tokenizer import Tokenizer

MAX_PASSES = 1000  # a guard against a huge budget over a tiny source, not a tuning knob


def shares(spec: DataSpec) -> list[float]:
    total = sum(s.weight for s in spec.sources)
    return [s.weight / total for s in spec.sources]


def apportion(total: int, weights: list[float]) -> list[int]:
    """Integers proportional to weights that sum exactly to total (largest remainder, ties by index)."""
    raw = [total * w for w in weights]
    out = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def plan_budgets(spec: DataSpec) -> list[dict[str, int | None]]:
    """Per source, the token budget of each split (None = unbounded)."""
    if spec.max_tokens is None:
        return [{split: None for split in SPLITS} for _ in spec.sources]
    val_total = spec.val_tokens if spec.val_tokens is not None else round(spec.max_tokens * spec.val_fraction)
    per_split = {"train": apportion(spec.max_tokens - val_total, shares(spec)),
                 "val": apportion(val_total, shares(spec))}
    return [{split: per_split[split][i] for split in SPLITS} for i in range(len(spec.sources))]


@dataclass
class SourceStats:
    spec: SourceSpec
    share: float
    budget: dict[str, int | None]
    order: int
    tokens: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    docs: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    docs_read: int = 0
    docs_skipped: int = 0  # routed to a split whose budget was already full
    docs_truncated: int = 0
    passes: int = 1
    docs_per_pass: int | None = None  # known once the first pass ends
    stop_reason: str = ""

    @property
    def written(self) -> int:
        return sum(self.tokens.values())

    def room(self, split: str) -> float:
        budget = self.budget[split]
        return float("inf") if budget is None else budget - self.tokens[split]

    def full(self) -> bool:
        return all(self.room(s) <= 0 for s in SPLITS)

    def report(self, totals: dict[str, int]) -> dict[str, Any]:
        all_tokens = sum(totals.values())
        return {
            "name": self.spec.name, "kind": self.spec.kind, "weight": self.spec.weight,
            "requested_share": round(self.share, 6),
            "achieved_share": round(self.written / all_tokens, 6) if all_tokens else 0.0,
            "achieved_share_by_split": {s: round(self.tokens[s] / totals[s], 6) if totals[s] else 0.0 for s in SPLITS},
            "budget": self.budget, "tokens": self.tokens, "docs": self.docs,
            "docs_read": self.docs_read, "docs_skipped": self.docs_skipped, "docs_truncated": self.docs_truncated,
            "passes": self.passes,
            "epochs": round(self.docs_read / self.docs_per_pass, 4) if self.docs_per_pass else None,
            "stop_reason": self.stop_reason,
        }


class _Reader:
    """A source's documents, restarted from the beginning when cycling."""

    def __init__(self, stats: SourceStats, cycle: bool):
        self.stats, self.cycle = stats, cycle
        self._it = iter_documents(stats.spec)
        self._read_in_pass = 0
        self._written_at_pass_start = 0

    def next(self) -> str | None:
        st = self.stats
        while True:
            doc = next(self._it, None)
            if doc is not None:
                self._read_in_pass += 1
                st.docs_read += 1
                return doc
            if st.docs_per_pass is None:
                st.docs_per_pass = self._read_in_pass
                if self._read_in_pass == 0:
                    raise SourceError(f"source {st.spec.name!r} yielded no documents")
            if not self.cycle or all(st.budget[s] is None for s in SPLITS):
                st.stop_reason = "source exhausted"
                return None
            if st.written == self._written_at_pass_start:
                st.stop_reason = "a whole pass added no tokens (remaining budget unreachable)"
                return None
            if st.passes >= MAX_PASSES:
                st.stop_reason = f"stopped after {MAX_PASSES} passes"
                return None
            st.passes += 1
            self._read_in_pass, self._written_at_pass_start = 0, st.written
            self._it = iter_documents(st.spec)


def mix(spec: DataSpec, tokenizer: Tokenizer, writers: dict[str, ShardWriter],
        on_doc: Callable[[int, int], None] | None = None) -> list[SourceStats]:
    """Write the mixed documents (each + eos) into the split writers; on_doc(tokens, text_bytes) per doc read."""
    plan = zip(spec.sources, shares(spec), plan_budgets(spec))
    stats = [SourceStats(src, share, budget, i) for i, (src, share, budget) in enumerate(plan)]
    readers = {id(st): _Reader(st, spec.on_short == "cycle") for st in stats}
    active = [st for st in stats if not st.full()]
    eos = np.array([tokenizer.eos_id], dtype=np.int64)
    val_share = spec.val_share
    while active:
        st = min(active, key=lambda s: (s.written / s.spec.weight, s.order))
        doc = readers[id(st)].next()
        if doc is None:
            active.remove(st)
            continue
        split = doc_split(doc, spec.seed, val_share)
        room = st.room(split)
        if room <= 0:
            st.docs_skipped += 1
            if on_doc:
                on_doc(0, len(doc))
            continue
        ids = np.concatenate([tokenizer.encode_array(doc), eos])
        if ids.size > room:
            ids = np.concatenate([ids[: int(room) - 1], eos])
            st.docs_truncated += 1
        writers[split].write(ids)
        st.tokens[split] += ids.size
        st.docs[split] += 1
        if on_doc:
            on_doc(int(ids.size), len(doc))
        if st.full():
            st.stop_reason = "budget reached"
            active.remove(st)
    return stats


def training_corpus(spec: DataSpec, byte_budget: int) -> Iterator[str]:
    """Texts to learn BPE merges from: train-split documents only (no val leakage), each source up to
    its share of byte_budget characters, sources one after the other, no cycling."""
    for src, share in zip(spec.sources, shares(spec)):
        left = int(byte_budget * share)
        for doc in iter_documents(src):
            if left <= 0:
                break
            if doc_split(doc, spec.seed, spec.val_share) != "train":
                continue
            piece = doc[:left]
            left -= len(piece)
            yield piece
