"""manifest.json: what a prepared data dir holds, and the content_hash that goes into every trial_key.

A data dir is complete exactly when its manifest exists: prepare writes everything into a temp dir,
the manifest last, then renames the dir into place. A dir without a manifest is an interrupted build.

content_hash covers the spec (minus out_dir), the tokenizer file hashes and every shard's sha256, so two
dirs with equal hashes hold the same tokens with the same meaning, wherever and whenever they were built.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from grid.data.shards import MANIFEST, SPLITS
from grid.keys import content_hash

FORMAT = "lingrid-token-shards/1"


class DataDirError(RuntimeError):
    """The output dir holds something prepare must not overwrite."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compute_content_hash(manifest: dict[str, Any]) -> str:
    return content_hash({
        "format": manifest["format"],
        "spec_hash": manifest["spec_hash"],
        "tokenizer_files": manifest["tokenizer"]["files"],
        "shards": {s: [sh["sha256"] for sh in manifest["splits"][s]["shards"]] for s in SPLITS},
    })


def build_manifest(*, spec_dump: dict[str, Any], spec_hash: str, tokenizer: dict[str, Any],
                   dtype: str, splits: dict[str, dict[str, Any]], sources: list[dict[str, Any]],
                   environment: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "format": FORMAT,
        "name": spec_dump["name"],
        "spec_hash": spec_hash,
        "spec": spec_dump,
        "tokenizer": tokenizer,
        "dtype": dtype,
        "splits": splits,
        "sources": sources,
        # not hashed: where and when it was built
        "environment": environment,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest["content_hash"] = compute_content_hash(manifest)
    return manifest


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / MANIFEST)


def read_manifest(data_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete data dir (with "dir" added, in memory only), or None if incomplete."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    manifest["dir"] = str(Path(data_dir).resolve())
    return manifest


def verify(data_dir: str | Path) -> list[str]:
    """Re-hash every file against the manifest; returns the problems (empty = intact)."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if manifest is None:
        return [f"{data_dir}: no {MANIFEST}"]
    problems = []
    files = [(sh["file"], sh["sha256"]) for s in SPLITS for sh in manifest["splits"][s]["shards"]]
    files += list(manifest["tokenizer"]["files"].items())
    for name, sha in files:
        path = data_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif file_sha256(path) != sha:
            problems.append(f"{name}: sha256 differs from the manifest")
    if compute_content_hash(manifest) != manifest["content_hash"]:
        problems.append("content_hash does not match the manifest's contents")
    return problems


# ---- the output dir's lifecycle -------------------------------------------------------------------------

_OURS = (".bin", ".json", ".tmp")


def _looks_like_ours(path: Path) -> bool:
    """Only delete a manifest-less dir if it holds nothing but what prepare writes (a crashed build)."""
    for p in path.rglob("*"):
        rel = p.relative_to(path)
        if rel.parts[0] == "tokenizer" or p.is_dir():
            continue
        if not p.name.endswith(_OURS):
            return False
    return True


def check_existing(out_dir: Path, spec_hash: str, force: bool) -> dict[str, Any] | None:
    """The reusable manifest if out_dir already holds this spec; None if it must be (re)built.

    Raises DataDirError when out_dir holds another spec's data (and not force) or foreign files.
    """
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():  # never move a user's file aside to put shards there
        raise DataDirError(f"{out_dir} exists and is not a directory; give a directory for the shards (--out DIR)")
    manifest = read_manifest(out_dir)
    if manifest is not None:
        if manifest.get("spec_hash") == spec_hash and not force:
            return manifest
        if not force:
            raise DataDirError(
                f"{out_dir} already holds data prepared from a different spec "
                f"(its spec_hash {manifest.get('spec_hash')}, this spec {spec_hash}; name {manifest.get('name')!r}).\n"
                "Trials may depend on it. Use another out_dir (--out DIR or `out_dir:` in the spec), "
                "or rebuild it with --force.")
        return None
    if not _looks_like_ours(out_dir):
        raise DataDirError(f"{out_dir} exists, has no {MANIFEST} and holds files prepare did not write; "
                           "refusing to replace it: choose another --out or remove it yourself")
    return None  # an interrupted build: rebuilt


def temp_dir_for(out_dir: Path) -> Path:
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out_dir: Path) -> None:
    """Swap the finished temp dir into place; the old dir (rebuild) is removed only after the swap."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """Human summary for `grid data show` and the end of `grid data prepare`."""
    tok = manifest["tokenizer"]
    lines = [
        f"data set   {manifest['name']}   content_hash {manifest['content_hash']}   spec_hash {manifest['spec_hash']}",
        f"tokenizer  {tok['kind']}  vocab {tok['vocab_size']}  eos {tok['eos_id']}  dtype {manifest['dtype']}"
        + (f"  ({tok['name_or_path']})" if tok.get("name_or_path") else ""),
    ]
    for split in SPLITS:
        sp = manifest["splits"][split]
        n_shards = len(sp["shards"])
        lines.append(f"{split:<6}     {sp['tokens']:>14,} tokens  {sp['docs']:>9,} docs  {n_shards} shard(s)")
    header = ("source", "kind", "requested", "achieved", "tokens", "docs", "epochs")
    lines.append("{:<16}{:<12}{:>10}{:>10}{:>15}{:>10}{:>8}  stop".format(*header))
    for s in manifest["sources"]:
        epochs = "<1" if s["epochs"] is None else f"{s['epochs']:.2f}"
        lines.append(f"{s['name']:<16}{s['kind']:<12}{s['requested_share']:>10.3f}{s['achieved_share']:>10.3f}"
                     f"{sum(s['tokens'].values()):>15,}{sum(s['docs'].values()):>10,}{epochs:>8}  {s['stop_reason']}")
    if manifest.get("dir"):
        lines.append(f"dir        {manifest['dir']}")
    return lines


__all__ = ["DataDirError", "build_manifest", "check_existing", "compute_content_hash",
           "file_sha256", "publish", "read_manifest", "summary_lines", "temp_dir_for", "verify", "write_manifest"]
