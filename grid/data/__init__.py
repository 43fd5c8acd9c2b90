"""Text sources -> tokenizer -> token shards, with a manifest whose content_hash enters every trial_key.

    spec = load_data_spec("configs/data/stdlib-bytes.yaml")
    manifest = prepare(spec)                       # or reused: "up to date"
    train = TokenShards(manifest["dir"], "train")
    x, y = train.batch(step, batch_size, seq_len)  # int64 [B, T], a pure function of step

Imported eagerly (numpy, pydantic only; torch, tokenizers, transformers, datasets load on use):
the function `prepare` shares its name with the module grid/data/prepare.py, and binding it here
keeps `from grid.data import prepare` the function whatever was imported before.
"""
from __future__ import annotations

from grid.data.manifest import DataDirError, read_manifest, verify
from grid.data.prepare import PrepareError, prepare
from grid.data.shards import TokenShards
from grid.data.spec import DataSpec, DataSpecError, SourceSpec, TokenizerSpec, load_data_spec, parse_data_spec
from grid.data.tokenizer import load_tokenizer

__all__ = ["DataDirError", "DataSpec", "DataSpecError", "PrepareError", "SourceSpec", "TokenShards",
           "TokenizerSpec", "load_data_spec", "load_tokenizer", "parse_data_spec", "prepare", "read_manifest",
           "verify"]
