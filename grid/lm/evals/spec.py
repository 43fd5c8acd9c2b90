"""The `evals` block of an LM grid: which recall evaluations every trial runs at its end.

One block per grid, like the recipe, so every trial is scored on the same data. The block is part
of each trial's hashed config (grid/lm/gridspec.py puts it next to the recipe), so together with the
data hash it decides the evaluation data, which is a pure function of (block, held-out split,
tokenizer). A grid without the block keeps its trial keys.

Imports only pydantic (the driver validates grids without torch).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grid.results.schema import copy_column, mqar_column, needle_column


class CopySpec(BaseModel):
    """In-context copy: `span` random tokens, `gap` tokens of held-out text, the same span again.
    Scored: next-token accuracy on the repeat's tokens after its first (the first is unpredictable)."""

    model_config = ConfigDict(extra="forbid")

    settings: list[tuple[int, int]] = Field(
        default_factory=lambda: [(16, 64), (16, 224), (32, 448)],
        description="(span, gap) pairs; a sequence is 2 * span + gap tokens long, and settings longer than "
                    "the trained context are summarised separately (copy_acc_beyond)")
    samples: int = Field(32, gt=0, description="sequences per setting")

    @field_validator("settings")
    @classmethod
    def _check(cls, settings: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not settings:
            raise ValueError("in_context_copy.settings needs at least one (span, gap) pair")
        for span, gap in settings:
            if span < 2 or gap < 0:
                raise ValueError(f"in_context_copy.settings: ({span}, {gap}) needs span >= 2 and gap >= 0")
        names = [copy_column(s, g) for s, g in settings]
        if len(set(names)) != len(names):
            raise ValueError(f"in_context_copy.settings repeats a (span, gap) pair: {settings}")
        return settings


class MQARSpec(BaseModel):
    """Multi-query associative recall in the layout of Zoology's MQAR (Arora et al. 2023), in the model's
    own vocabulary: `pairs` key-value pairs (keys from one half of the usable ids, values from the other),
    then a query region of `seq_len - 2 * pairs` random tokens in which each key appears once, at an even
    offset drawn from a power law (`power_a`; small = queries close to the start of the region).
    Scored: accuracy of the value predicted right after each queried key."""

    model_config = ConfigDict(extra="forbid")

    pairs: list[int] = Field(default_factory=lambda: [4, 8, 16, 32], description="numbers of key-value pairs")
    seq_len: int = Field(256, gt=0, description="tokens per sequence (context and query region)")
    power_a: float = Field(0.01, gt=0, le=1, description="Zoology's power-law parameter for the query offsets")
    samples: int = Field(32, gt=0, description="sequences per number of pairs")

    @model_validator(mode="after")
    def _check(self) -> MQARSpec:
        if not self.pairs:
            raise ValueError("associative_recall.pairs needs at least one number of pairs")
        if len(set(self.pairs)) != len(self.pairs):
            raise ValueError(f"associative_recall.pairs repeats a value: {self.pairs}")
        for n in self.pairs:
            if n < 1 or 4 * n > self.seq_len:
                raise ValueError(f"associative_recall.pairs={n}: needs 1 <= pairs and 4 * pairs <= seq_len="
                                 f"{self.seq_len} (the query region holds every key at an even offset)")
        return self


class NeedleSpec(BaseModel):
    """Needle retrieval by loss: the fact `prefix KEY middle VALUE suffix` at several depths of `context`
    tokens of held-out text, and at the end `prefix KEY middle` followed by the answer. KEY and VALUE are
    random tokens; the template strings are encoded with the trial's tokenizer.
    Scored: mean cross-entropy (nats) of the VALUE tokens at the end (lower is better)."""

    model_config = ConfigDict(extra="forbid")

    depths: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9],
                                description="where the fact sits in the text: 0 = start, 1 = just before the question")
    context: int = Field(256, gt=0, description="tokens per sequence, question and answer included")
    key_tokens: int = Field(2, gt=0)
    value_tokens: int = Field(4, gt=0)
    prefix: str = "\nThe secret code of "
    middle: str = " is "
    suffix: str = ".\n"
    samples: int = Field(32, gt=0, description="sequences per depth")

    @field_validator("depths")
    @classmethod
    def _check(cls, depths: list[float]) -> list[float]:
        if not depths:
            raise ValueError("needle.depths needs at least one depth")
        for d in depths:
            if not 0 <= d <= 1:
                raise ValueError(f"needle.depths: {d} is outside [0, 1]")
        names = [needle_column(d) for d in depths]
        if len(set(names)) != len(names):
            raise ValueError(f"needle.depths must differ by at least 0.01 (one column per whole percent): {depths}")
        return depths


class EvalsSpec(BaseModel):
    """Recall evaluations run at the end of every trial of the grid (and at checkpoints if asked).
    A task set to null is not run."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="seeds every evaluation sequence (the same data for every trial)")
    batch_size: int = Field(16, gt=0, description="sequences per forward pass")
    at_checkpoints: bool = Field(False, description="also evaluate at every checkpoint (scores go to the curves table)")
    in_context_copy: CopySpec | None = Field(default_factory=CopySpec)
    associative_recall: MQARSpec | None = Field(default_factory=MQARSpec)
    needle: NeedleSpec | None = Field(default_factory=NeedleSpec)

    @model_validator(mode="after")
    def _something(self) -> EvalsSpec:
        if self.in_context_copy is None and self.associative_recall is None and self.needle is None:
            raise ValueError("evals: every task is null; remove the block instead")
        return self

    def check_vocab(self, vocab_size: int) -> None:
        """Vocabulary-dependent limits (ValueError naming the field): MQAR draws distinct keys and values."""
        usable = vocab_size - 1  # every id but eos
        if self.associative_recall is not None:
            n = max(self.associative_recall.pairs)
            if n > usable // 2:
                raise ValueError(f"evals.associative_recall.pairs={n}: the vocabulary ({vocab_size}) holds only "
                                 f"{usable // 2} distinct keys; allowed: pairs <= {usable // 2}")

    def columns(self) -> list[str]:
        """Every per-setting column this block produces (the summaries are schema.RECALL_COLUMNS)."""
        out: list[str] = []
        if self.in_context_copy is not None:
            out += [copy_column(s, g) for s, g in self.in_context_copy.settings]
        if self.associative_recall is not None:
            out += [mqar_column(n) for n in self.associative_recall.pairs]
        if self.needle is not None:
            out += [needle_column(d) for d in self.needle.depths]
        return out


__all__ = ["CopySpec", "EvalsSpec", "MQARSpec", "NeedleSpec"]
