"""The parity gate: a fused mixer trains only after it matched its reference on this host.

Before a trial builds a model, `gate_model(cfg, seq_len, batch, device, precision)` runs
`grid.check.parity.check_mixer` for every mixer kind of the model that would run its fused backend,
at the trial's own shape (batch x seq_len x d_model, the model's kwargs) and dtype, on the trial's
device. Why the trial's shape and not a generic one: fla 0.6.0's chunked retention returns wrong
gradients at T = 64 with batch 2 and right ones at T = 65 or batch 1 (docs/measurements/
2026-11-23-h100-s3-retnet-t64.txt), so only the shape that trains is evidence.

Results are cached per host and package versions (one JSON file per checked combination under
`cache_root()`, written atomically), so a combination costs one check per host: later trials read
the file. The policy (`LINGRID_PARITY`, set by the CLIs' `--parity` flag and passed to the Ray
workers like LINGRID_AUTOTUNE):
* `fallback` (default): a failed or refused combination trains the reference backend instead;
* `stop`: the trial stops with `ParityGateError` naming the failure;
* `off`: no check (the row says so).
A mixer without a reference can only be smoke-tested (finite outputs and gradients): it trains
fused, and the row says it was unchecked. Every decision lands in the row (`parity_gate`,
`parity_detail`).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grid.check import parity
from grid.env import provenance

# Lazy here: torch (heavy: never at import time on the driver); grid.models.registry, grid.models.stack (they import
#   torch or Ray)

Policy = Literal["fallback", "stop", "off"]
POLICIES: tuple[str, ...] = ("fallback", "stop", "off")
POLICY_ENV = "LINGRID_PARITY"
CACHE_ENV = "LINGRID_PARITY_CACHE"
MAX_CHECK_TOKENS = 16384  # batch x seq_len of one check: the trial's batch, capped for long sequences
_LOCK = threading.Lock()  # packed runs share a process: one check per combination, not one per thread


class ParityGateError(RuntimeError):
    """A fused mixer failed its parity check here and the policy is `stop`."""


@dataclass(frozen=True)
class GateDecision:
    backend: str  # the backend the model is built with: unchanged, or "reference" after a fallback
    status: str  # passed | fallback | unchecked | off | not-needed
    detail: str

    def row(self) -> dict[str, str]:
        return {"parity_gate": self.status, "parity_detail": self.detail}


def policy_from_env() -> str:
    value = os.environ.get(POLICY_ENV, "fallback")
    if value not in POLICIES:
        raise ValueError(f"{POLICY_ENV}={value!r} is not allowed; allowed: {', '.join(POLICIES)}")
    return value


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lingrid" / "parity")


def host_fingerprint(device) -> dict[str, str]:
    """What a parity result depends on besides the mixer and the shape."""
    import torch  # noqa: PLC0415

    prov = provenance()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": gpu, **{k: str(prov.get(k)) for k in ("torch", "triton", "fla", "cuda")}}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def check_cached(mixer: str, kwargs: dict, shape: tuple[int, int, int], dtype: str, device) -> dict:
    """The parity row of one combination on this host: from the cache, or measured now and cached."""

    fp = host_fingerprint(device)
    entry = {"mixer": mixer, "kwargs": kwargs, "shape": list(shape), "dtype": dtype}
    path = cache_root() / _digest(fp) / f"{mixer}-{_digest(entry)}.json"
    with _LOCK:
        if path.is_file():
            try:
                return json.loads(path.read_text())["row"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged entry is measured again
        rows = parity.check_mixer(mixer, shapes=[shape], dtypes=(dtype,), device=str(device), kwargs=kwargs)
        row = rows[0].as_dict()
        _write_atomic(path, {"host": fp, "entry": entry, "row": row})
        return row


def _fused_layers(cfg) -> dict[str, dict]:
    """{mixer name: resolved kwargs} of the model's layer kinds that would run their fused backend."""
    from grid.models.registry import get_mixer  # noqa: PLC0415
    from grid.models.stack import resolve_backend  # noqa: PLC0415

    layout = cfg.layout()
    kinds = {"attention" if layout.is_attention(i) else cfg.mixer for i in range(cfg.n_layers)}
    out = {}
    for name in sorted(kinds):
        if resolve_backend(get_mixer(name), cfg.backend) == "fused":
            out[name] = cfg.resolved_attn_kwargs() if name != cfg.mixer else cfg.resolved_mixer_kwargs()
    return out


def gate_model(cfg, seq_len: int, batch: int, device, precision: str, policy: str | None = None):
    """(model config to build, GateDecision). Raises ParityGateError under `stop`."""
    from grid.models.registry import get_mixer  # noqa: PLC0415

    policy = policy or policy_from_env()
    if policy == "off":
        return cfg, GateDecision(cfg.backend, "off", "parity gate off")
    fused = _fused_layers(cfg)
    if not fused:
        return cfg, GateDecision(cfg.backend, "not-needed", "no fused mixer in this model")
    dtype = "bf16" if precision == "bf16" and device.type == "cuda" else "fp32"
    b = max(1, min(batch, MAX_CHECK_TOKENS // max(1, seq_len)))
    shape = (b, seq_len, cfg.d_model)
    failed, unchecked, passed = [], [], []
    for name, kw in fused.items():
        row = check_cached(name, kw, shape, dtype, device)
        where = f"{name} {dtype} {b}x{seq_len}x{cfg.d_model}"
        if row["status"] == "PASS":
            passed.append(where)
        elif row["status"] == "NO-REFERENCE":
            unchecked.append(f"{where}: no reference, smoke test only")
        else:
            errs = ", ".join(f"{k}={row[k]:.3g}" for k in ("out_err", "dx_err", "dw_err") if row.get(k) is not None)
            failed.append((name, f"{where}: {row['status']} {errs} {row.get('detail') or ''}".strip()))
    if failed:
        why = "; ".join(d for _, d in failed)
        if policy == "stop":
            raise ParityGateError(f"fused kernels failed parity on this host ({why}); rerun with --parity "
                                  f"fallback to train the reference backend")
        no_ref = [n for n, _ in failed if get_mixer(n).reference is None]
        if no_ref:
            raise ParityGateError(f"fused kernels failed parity on this host ({why}) and {', '.join(no_ref)} "
                                  f"has no reference backend to fall back to")
        return cfg.model_copy(update={"backend": "reference"}), GateDecision(
            "reference", "fallback", f"trained the reference backend: {why}")
    if unchecked:
        return cfg, GateDecision(cfg.backend, "unchecked", "; ".join(unchecked + passed))
    return cfg, GateDecision(cfg.backend, "passed", "; ".join(passed))
