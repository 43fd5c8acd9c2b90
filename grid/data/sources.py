"""Documents (str) per source kind, always in the same order for the same inputs.

Order matters: the mixture and the shards are a pure function of the document streams, so every
iterator here walks its inputs in sorted, reproducible order.
"""
from __future__ import annotations

import glob
import gzip
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grid.data.spec import SourceSpec

# Lazy here: datasets, pyarrow (optional or slow to import: only the paths that use them)

# path components that mark tests or third-party code inside the stdlib tree
_STDLIB_SKIP = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


class SourceError(RuntimeError):
    """A source that cannot be read; the message names the source and the fix."""


def stdlib_files() -> list[Path]:
    """The embedded offline corpus: this Python's own standard-library `.py` files (no tests, no site-packages).

    Sorted by POSIX relative path so every machine with the same Python version yields the same stream.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP]  # prune: site-packages can be GBs
        rel = Path(dirpath).relative_to(root)
        files += [rel / f for f in filenames if f.endswith(".py") and os.path.isfile(os.path.join(dirpath, f))]
    return [root / rel for rel in sorted(files, key=lambda p: p.as_posix())]


def expand_paths(patterns: list[str], source: str) -> list[Path]:
    """Files, directories (all files below, recursively) or glob patterns -> sorted file list per entry."""
    out: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
        elif os.path.isdir(pattern):
            matches = sorted(str(p) for p in Path(pattern).rglob("*") if p.is_file())
        else:
            matches = [pattern] if os.path.exists(pattern) else []
        files = [Path(m) for m in matches if os.path.isfile(m)]
        if not files:
            raise SourceError(f"source {source!r}: {pattern!r} matches no files (cwd: {os.getcwd()})")
        out.extend(files)
    return out


def _read_text(path: Path) -> str:
    # replace undecodable bytes instead of failing: a stray latin-1 file should not stop a 10B-token build
    return path.read_bytes().decode("utf-8", errors="replace")


def _text_of(row: dict[str, Any], field: str | list[str], where: str) -> str:
    fields = [field] if isinstance(field, str) else field
    parts = []
    for name in fields:
        if name not in row:
            raise SourceError(f"{where}: no field {name!r}; fields present: {sorted(row)} (set text_field)")
        value = row[name]
        parts.append("" if value is None else str(value))
    return "\n\n".join(p for p in parts if p)


def _iter_text_files(spec: SourceSpec) -> Iterator[str]:
    for path in expand_paths(spec.paths, spec.name):
        yield _read_text(path)


def _iter_jsonl(spec: SourceSpec) -> Iterator[str]:
    for path in expand_paths(spec.paths, spec.name):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"source {spec.name!r}: {path}:{lineno} is not JSON ({exc})") from None
                yield _text_of(row, spec.text_field, f"source {spec.name!r}: {path}:{lineno}")


def _iter_parquet(spec: SourceSpec) -> Iterator[str]:
    import pyarrow.parquet as pq  # noqa: PLC0415  (only parquet sources pay for it)

    columns = [spec.text_field] if isinstance(spec.text_field, str) else list(spec.text_field)
    for path in expand_paths(spec.paths, spec.name):
        pf = pq.ParquetFile(path)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise SourceError(f"source {spec.name!r}: {path} has no column {missing}; "
                              f"columns: {pf.schema_arrow.names} (set text_field)")
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            for row in batch.to_pylist():
                yield _text_of(row, spec.text_field, f"source {spec.name!r}: {path}")


def _iter_stdlib(spec: SourceSpec) -> Iterator[str]:
    for path in stdlib_files():
        yield _read_text(path)


def _iter_hf(spec: SourceSpec) -> Iterator[str]:
    try:
        import datasets  # noqa: PLC0415  (optional, heavy, needs the network or a local cache)
    except ImportError:
        raise SourceError(f"source {spec.name!r} (kind 'hf') needs the `datasets` package: "
                          "pip install 'lingrid[data]'  (or pip install datasets)") from None
    try:
        ds = datasets.load_dataset(spec.hf_name, spec.hf_config, split=spec.hf_split,
                                   data_files=spec.hf_data_files, streaming=spec.hf_streaming)
    except Exception as exc:  # noqa: BLE001  (hub/network/cache errors come in many types; all mean the same)
        raise SourceError(
            f"source {spec.name!r}: cannot load Hugging Face dataset {spec.hf_name!r} "
            f"(config {spec.hf_config!r}, split {spec.hf_split!r}): {type(exc).__name__}: {exc}\n"
            "fix: check the name/config, log in for gated sets (huggingface-cli login), or on an offline "
            "machine download the files elsewhere and use kind 'parquet' / 'jsonl' with local paths") from None
    where = f"source {spec.name!r}: dataset {spec.hf_name!r}"
    for row in ds:
        yield _text_of(row, spec.text_field, where)


_READERS = {
    "text_files": _iter_text_files,
    "jsonl": _iter_jsonl,
    "parquet": _iter_parquet,
    "stdlib": _iter_stdlib,
    "hf": _iter_hf,
}


def iter_documents(spec: SourceSpec) -> Iterator[str]:
    """One pass over a source's documents, in its fixed order; empty documents are skipped."""
    for doc in _READERS[spec.kind](spec):
        if doc:
            yield doc


def describe_source(spec: SourceSpec) -> dict[str, Any]:
    """What the manifest records about where the text came from (beyond the spec itself)."""
    if spec.kind == "stdlib":
        files = stdlib_files()
        return {"python": sys.version.split()[0], "files": len(files),
                "bytes": sum(f.stat().st_size for f in files)}
    if spec.kind in ("text_files", "jsonl", "parquet"):
        files = expand_paths(spec.paths, spec.name)
        return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}
    return {"hf_name": spec.hf_name, "hf_config": spec.hf_config, "hf_split": spec.hf_split}
