"""Node-local prepared data: on a multi-node cluster a trial prepares its data where it runs.

Why: the driver of a Ray job runs in the job's temporary working dir on the head node; data it
prepares there does not exist on other nodes (issue 21: 'has no manifest.json' on the second
node). Without shared storage, each node builds the shards itself from the data spec (the hashed
part: `DataSpec.hashed()`) into its own cache, and the trial checks the result's content_hash
against the one its trial_key was made with: a node whose data came out different (another Python
version's stdlib, other files) fails the trial with a message saying so, never trains on it.

The cache root is `$LINGRID_DATA_CACHE`, else `~/.cache/lingrid/data`; one directory per spec
hash; one builder at a time per directory (a lock file), so trials that start together on one node
prepare it once.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

from grid.data.prepare import prepare
from grid.data.spec import parse_data_spec

CACHE_ENV = "LINGRID_DATA_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lingrid" / "data").expanduser()


def cache_dir(spec) -> Path:
    """Where this node keeps the shards of `spec` (a DataSpec)."""
    return cache_root() / f"{spec.name}-{spec.spec_hash()}"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_local(spec_dump: dict[str, Any], expected_hash: str | None, verbose: bool = False) -> dict[str, Any]:
    """The manifest of `spec_dump`'s shards in this node's cache, built there when missing.

    Raises ValueError when the shards built here differ from `expected_hash`."""

    spec = parse_data_spec({k: v for k, v in spec_dump.items() if k != "out_dir"}, where="the trial's data spec")
    out = cache_dir(spec)
    with _locked(out.parent / f".{out.name}.lock"):
        manifest = prepare(spec, out_dir=out, verbose=verbose)
    have = manifest.get("content_hash")
    if expected_hash is not None and have != expected_hash:
        raise ValueError(f"the data prepared on this node ({out}) has content_hash {have}, but the trial was planned "
                         f"with {expected_hash}: this node's sources differ from the driver's (e.g. another Python "
                         "version's stdlib). Put the prepared data on storage every node mounts and pass --data-dir")
    return manifest


__all__ = ["CACHE_ENV", "cache_dir", "cache_root", "ensure_local"]
