"""prepare(spec) -> manifest: sources -> tokenizer -> mixture -> shards -> manifest, built atomically."""
from __future__ import annotations

import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from grid.data.manifest import (build_manifest, check_existing, file_sha256, publish, read_manifest, temp_dir_for,
                                write_manifest)
from grid.data.mixture import mix, training_corpus
from grid.data.shards import SPLITS, ShardWriter, dtype_for_vocab
from grid.data.sources import describe_source
from grid.data.spec import DataSpec, load_data_spec
from grid.data.tokenizer import build_tokenizer
from grid.env import git_sha, package_version


class PrepareError(RuntimeError):
    """The spec is valid but the data it yields cannot make a usable data set (e.g. empty val split)."""


class Meter:
    """Progress every ~2 s: one line rewritten in place on a terminal, appended lines in a log file."""

    def __init__(self, label: str, stream: TextIO | None, interval: float = 2.0):
        self.label, self.stream, self.interval = label, stream, interval
        self.docs = self.tokens = self.bytes = 0
        self.t0 = self._last = time.monotonic()
        self._tty = bool(stream and stream.isatty())

    def update(self, tokens: int, nbytes: int) -> None:
        self.docs += 1
        self.tokens += tokens
        self.bytes += nbytes
        now = time.monotonic()
        if self.stream and now - self._last >= self.interval:
            self._last = now
            self._print(end="\r" if self._tty else "\n")

    def line(self) -> str:
        dt = max(time.monotonic() - self.t0, 1e-9)
        return (f"{self.label}: {self.docs:,} docs read, {self.tokens / 1e6:,.2f}M tokens written, "
                f"{self.bytes / 1e6:,.1f} MB text, {self.bytes / 1e6 / dt:,.1f} MB/s, {dt:,.0f} s")

    def _print(self, end: str) -> None:
        self.stream.write(self.line() + end)  # type: ignore[union-attr]
        self.stream.flush()  # type: ignore[union-attr]

    def done(self) -> None:
        if self.stream:
            self._print(end="\n")


def _environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "numpy": package_version("numpy"), "tokenizers": package_version("tokenizers"),
            "transformers": package_version("transformers"), "datasets": package_version("datasets"),
            "lingrid_git_sha": git_sha()}


def prepare(spec: DataSpec | str | Path, *, out_dir: str | Path | None = None, force: bool = False,
            verbose: bool = True) -> dict[str, Any]:
    """Build (or reuse) the token shards of a data spec; returns the manifest (plus "dir", its location).

    Reuses an existing dir whose manifest has this spec's hash ("up to date"); refuses a dir holding
    another spec's data unless force; rebuilds a dir without manifest (an interrupted build).
    """
    if not isinstance(spec, DataSpec):
        spec = load_data_spec(spec)
    out = Path(out_dir if out_dir is not None else spec.out_dir)  # type: ignore[arg-type]
    log = sys.stderr if verbose else None
    spec_hash = spec.spec_hash()
    existing = check_existing(out, spec_hash, force)
    if existing is not None:
        if log:
            print(f"{out}: up to date (spec_hash {spec_hash}, content_hash {existing['content_hash']})", file=log)
        return existing
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_for(out)
    try:
        _build(spec, spec_hash, tmp, log)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = read_manifest(out)
    assert manifest is not None
    return manifest


def _build(spec: DataSpec, spec_hash: str, tmp: Path, log: TextIO | None) -> None:
    tk = spec.tokenizer
    corpus = None
    if tk.kind == "bpe":
        if log:
            print(f"{spec.name}: training byte-level BPE (vocab {tk.vocab_size}) on up to "
                  f"{tk.train_bytes / 1e6:,.1f} MB of train-split text", file=log)
        corpus = training_corpus(spec, tk.train_bytes)
    tokenizer = build_tokenizer(tk, corpus)
    if tk.kind == "bpe" and tokenizer.vocab_size < tk.vocab_size and log:  # type: ignore[operator]
        print(f"{spec.name}: note: BPE learned only {tokenizer.vocab_size} of {tk.vocab_size} tokens "
              f"(too little text or min_frequency {tk.min_frequency} too high); the manifest records "
              "the actual size", file=log)
    files = tokenizer.save(tmp)
    tok_desc = {**tokenizer.describe(), "files": {f: file_sha256(tmp / f) for f in files}}

    dtype = dtype_for_vocab(tokenizer.vocab_size)
    writers = {s: ShardWriter(tmp, s, dtype, spec.shard_tokens) for s in SPLITS}
    meter = Meter(spec.name, log)
    stats = mix(spec, tokenizer, writers, meter.update)
    meter.done()
    splits = {s: {"tokens": writers[s].tokens, "docs": sum(st.docs[s] for st in stats),
                  "shards": writers[s].finish()} for s in SPLITS}

    totals = {s: splits[s]["tokens"] for s in SPLITS}
    if totals["train"] == 0:
        raise PrepareError(f"{spec.name}: the sources produced no training tokens")
    if totals["val"] < spec.seq_len + 1:
        raise PrepareError(
            f"{spec.name}: the val split has {totals['val']} tokens, fewer than one window of seq_len+1 = "
            f"{spec.seq_len + 1}; raise val_fraction / val_tokens or max_tokens, or add documents")
    sources = [{**st.report(totals), "info": describe_source(st.spec)} for st in stats]
    manifest = build_manifest(spec_dump=spec.hashed(), spec_hash=spec_hash, tokenizer=tok_desc,
                              dtype=dtype.name, splits=splits, sources=sources, environment=_environment())
    write_manifest(tmp, manifest)  # last: its presence marks the dir complete
