"""Stable content hashes: the `trial_key` of a trial is the hash of everything that can change its result."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs give byte-equal strings.

    Pydantic models are dumped in JSON mode first; floats keep Python's shortest repr.
    """
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(obj: Any, length: int = 16) -> str:
    """Hex sha256 of the canonical JSON, truncated (16 hex chars = 64 bits: no collisions at grid sizes)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
