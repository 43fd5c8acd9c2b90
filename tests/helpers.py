"""Pieces several test modules share: a tiny byte-level data spec and a module-wide embedded Ray."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_tiny_bytes_spec(root: Path) -> Path:
    """A ~150k-token data spec (stdlib text, raw bytes) whose shards go under `root`/shards."""
    spec = root / "data.yaml"
    spec.write_text(f"""name: tiny-bytes
sources: [{{name: stdlib, kind: stdlib}}]
tokenizer: {{kind: bytes}}
seq_len: 128
max_tokens: 150000
val_fraction: 0.05
out_dir: {root / 'shards'}
""")
    return spec


def embedded_ray(**init_kwargs):
    """Generator for a module-scoped fixture: one local Ray for the module (startup is the slow part on
    2 cores), workers able to import `grid` and `tests.*` whatever pytest's cwd is; env restored after."""
    import ray

    old = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "PYTHONPATH")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old["PYTHONPATH"]) if p)
    if ray.is_initialized():  # a previous module forgot to shut down
        ray.shutdown()
    ray.init(include_dashboard=False, log_to_driver=False, **init_kwargs)
    yield
    ray.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
