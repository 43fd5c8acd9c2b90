"""Data spec: which text, which tokenizer, how many tokens, how to split. Loaded from YAML, validated up front.

Bad specs are rejected before any work starts, with the field, the bad value and the allowed values.
"""
from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grid.keys import content_hash
from grid.paths import lm_data_dir

SourceKind = Literal["text_files", "jsonl", "parquet", "hf", "stdlib"]
TokenizerKind = Literal["bytes", "bpe", "hf"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
_HF_FIELDS = ("hf_name", "hf_config", "hf_data_files")


class DataSpecError(ValueError):
    """A data spec that cannot be used; the message lists every problem, one per line."""


class SourceSpec(BaseModel):
    """One text source of the mixture."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="label in the manifest, e.g. general / code / math / reasoning")
    kind: SourceKind
    weight: float = Field(1.0, gt=0, description="mixture weight; shares are weight / sum(weights)")
    # text_files / jsonl / parquet: files, directories (recursive) or glob patterns; relative to the cwd
    paths: list[str] = Field(default_factory=list)
    # jsonl / parquet / hf: the column holding the text; a list joins several columns with a blank line
    text_field: str | list[str] = "text"
    hf_name: str | None = None
    hf_config: str | None = None
    hf_split: str = "train"
    hf_data_files: str | list[str] | None = None
    hf_streaming: bool = True

    @model_validator(mode="after")
    def _fields_match_kind(self) -> SourceSpec:
        if self.kind in ("text_files", "jsonl", "parquet") and not self.paths:
            raise ValueError(f"kind={self.kind!r} needs `paths` (files, directories or glob patterns)")
        if self.kind in ("hf", "stdlib") and self.paths:
            raise ValueError(f"kind={self.kind!r} takes no `paths` (got {self.paths!r}); "
                             "use kind 'text_files', 'jsonl' or 'parquet' for files")
        if self.kind == "hf" and not self.hf_name:
            raise ValueError("kind='hf' needs `hf_name` (a Hugging Face dataset id, e.g. 'HuggingFaceFW/fineweb-edu')")
        if self.kind != "hf":
            bad = [f for f in _HF_FIELDS if getattr(self, f) is not None]
            if bad:
                raise ValueError(f"{', '.join(bad)} only apply to kind='hf' (this source has kind={self.kind!r})")
        return self


class TokenizerSpec(BaseModel):
    """bytes: UTF-8 bytes + eos (vocab 257). bpe: byte-level BPE trained on the corpus. hf: a pretrained tokenizer."""

    model_config = ConfigDict(extra="forbid")

    kind: TokenizerKind
    vocab_size: int | None = Field(None, ge=260, le=1_000_000, description="bpe only, includes the eos token")
    min_frequency: int = Field(2, ge=1, description="bpe only: merges seen fewer times are not learned")
    train_bytes: int = Field(20_000_000, gt=0, description="bpe only: text (train split) used to learn merges")
    name_or_path: str | None = Field(None, description="hf only: hub id or local directory")

    @model_validator(mode="after")
    def _fields_match_kind(self) -> TokenizerSpec:
        if self.kind == "bpe" and self.vocab_size is None:
            raise ValueError("kind='bpe' needs `vocab_size` (e.g. 4096; 260..1000000, eos included)")
        if self.kind != "bpe" and self.vocab_size is not None:
            fixed = "fixed at 257 (256 bytes + eos)" if self.kind == "bytes" else "taken from the pretrained tokenizer"
            raise ValueError(f"vocab_size is {fixed} for kind={self.kind!r}; remove it (got {self.vocab_size})")
        if self.kind == "hf" and not self.name_or_path:
            raise ValueError("kind='hf' needs `name_or_path` (hub id or local directory)")
        if self.kind != "hf" and self.name_or_path is not None:
            raise ValueError(f"name_or_path only applies to kind='hf' (this tokenizer has kind={self.kind!r})")
        return self


class DataSpec(BaseModel):
    """Everything that decides the token shards. Its hash (minus `out_dir`) identifies a prepared data set."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME)
    sources: list[SourceSpec] = Field(min_length=1)
    tokenizer: TokenizerSpec
    seq_len: int = Field(gt=0, description="default training window; the val split must hold at least one")
    val_fraction: float | None = Field(None, gt=0, lt=0.5, description="share of tokens for validation (default 0.01)")
    val_tokens: int | None = Field(None, gt=0, description="absolute validation budget instead of val_fraction")
    max_tokens: int | None = Field(None, gt=0, description="train+val token budget; None = every source once")
    on_short: Literal["cycle", "stop"] = Field(
        "cycle", description="a source with fewer tokens than its budget: repeat it (epochs recorded) or stop short")
    shard_tokens: int = Field(100_000_000, ge=1024, description="tokens per shard file")
    seed: int = 0
    out_dir: str | None = Field(None, description='default <benchmark root>/data/lm/<name> (grid/paths.py); a relative path is relative to the cwd')

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceSpec]) -> list[SourceSpec]:
        names = [s.name for s in sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; repeated: {dup}")
        return sources

    @model_validator(mode="after")
    def _budget(self) -> DataSpec:
        if self.val_fraction is not None and self.val_tokens is not None:
            raise ValueError(f"give val_fraction ({self.val_fraction}) or val_tokens ({self.val_tokens}), not both")
        if self.val_tokens is not None:
            if self.max_tokens is None:
                raise ValueError("val_tokens needs max_tokens (the val share is val_tokens / max_tokens); "
                                 "or use val_fraction")
            if not self.val_tokens < self.max_tokens / 2:
                raise ValueError(f"val_tokens ({self.val_tokens}) must be < max_tokens / 2 ({self.max_tokens // 2})")
        if self.val_fraction is None and self.val_tokens is None:
            self.val_fraction = 0.01
        if self.out_dir is None:
            self.out_dir = lm_data_dir(self.name)
        return self

    @property
    def val_share(self) -> float:
        """Probability that a document goes to validation (see shards.doc_split)."""
        if self.val_tokens is not None:
            return self.val_tokens / self.max_tokens  # type: ignore[operator]  (validated: max_tokens set)
        return float(self.val_fraction)  # type: ignore[arg-type]

    def hashed(self) -> dict[str, Any]:
        """The spec as it enters the hash: where the shards live does not change what they contain."""
        return self.model_dump(mode="json", exclude={"out_dir"})

    def spec_hash(self) -> str:
        return content_hash(self.hashed())


# ---- loading with readable errors -------------------------------------------------------------------------


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """Follow an error location through the nested models, to list the fields allowed there."""
    model: type[BaseModel] | None = DataSpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return model
        model = None
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
    return model


def format_errors(exc: ValidationError, where: str = "data spec") -> str:
    lines = [f"invalid {where}:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else "?"
            lines.append(f"  {path}: unknown field (value {err['input']!r}); allowed fields: {allowed}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "string_pattern_mismatch" and loc[-1] == "name":
            msg = "names use letters, digits, '_', '.', '-' and start with a letter or digit (they become file names)"
        got = "" if err["type"] in ("missing",) or isinstance(err["input"], dict) else f" (got {err['input']!r})"
        lines.append(f"  {path}: {msg}{got}")
    return "\n".join(lines)


def parse_data_spec(data: Any, where: str = "data spec") -> DataSpec:
    if not isinstance(data, dict):
        raise DataSpecError(f"invalid {where}: expected a mapping of fields, got {type(data).__name__}")
    try:
        return DataSpec.model_validate(data)
    except ValidationError as exc:
        raise DataSpecError(format_errors(exc, where)) from None


def load_data_spec(path: str | Path) -> DataSpec:
    """Read and validate a data spec YAML file; raises DataSpecError naming every bad field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DataSpecError(f"cannot read data spec {path}: {exc}") from None
    except UnicodeDecodeError:
        raise DataSpecError(f"data spec {path} is not a text (YAML) file") from None
    except yaml.YAMLError as exc:
        raise DataSpecError(f"data spec {path} is not valid YAML: {exc}") from None
    return parse_data_spec(data, where=f"data spec {path}")
