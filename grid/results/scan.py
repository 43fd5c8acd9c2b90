"""Find the store's files and tell the readable ones from the rest (the one place every reader lists files).

A store holds, under its root::

    suite=S/grid=G/<trial_key>.parquet                 one row per trial (the `results` view)
    curves/suite=S/grid=G/<trial_key>.parquet          per-step rows (the `curves` view)
    history/suite=S/grid=G/<trial_key>@<stamp>.parquet rows a later write replaced (the `history` view)
    quarantine/...                                     unreadable files moved aside by `grid results check`
    .<name>.parquet.<host>-<pid>-<id>.tmp              a write in progress (or one a killed process left)

One unreadable file (zero bytes, truncated, not parquet) must not take a reader down: `scan` checks
each file's parquet footer (cached by size and mtime, so repeated reads cost one stat per file) and
returns the readable ones; readers build their views from those lists and name the others.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Lazy here: pyarrow (optional or slow to import: only the paths that use them); uuid (one code path)

ROW_GLOB = "suite=*/grid=*/*.parquet"
CURVES_DIR = "curves"
HISTORY_DIR = "history"
QUARANTINE_DIR = "quarantine"
TMP_SUFFIX = ".tmp"
# a temp file of another host (shared storage) is only removed once it is this old: its writer is surely gone
STALE_TMP_S = 3600.0

_cache: dict[str, tuple[int, int, str | None]] = {}  # path -> (size, mtime_ns, reason or None)
_lock = threading.Lock()


@dataclass
class StoreFiles:
    rows: list[Path] = field(default_factory=list)
    curves: list[Path] = field(default_factory=list)
    history: list[Path] = field(default_factory=list)
    bad: dict[Path, str] = field(default_factory=dict)  # unreadable file -> why
    temps: list[Path] = field(default_factory=list)


def unreadable_reason(path: Path) -> str | None:
    """None when `path` is a parquet file whose footer parses, else a short reason."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    key = str(path)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[:2] == (st.st_size, st.st_mtime_ns):
        return hit[2]
    reason = _check(path, st.st_size)
    with _lock:
        _cache[key] = (st.st_size, st.st_mtime_ns, reason)
    return reason


def forget(path: Path) -> None:
    """Drop a cached verdict (DuckDB found the file unreadable after all)."""
    with _lock:
        _cache.pop(str(path), None)


def mark_bad(path: Path, reason: str) -> None:
    try:
        st = path.stat()
    except OSError:
        return
    with _lock:
        _cache[str(path)] = (st.st_size, st.st_mtime_ns, reason)


def _check(path: Path, size: int) -> str | None:
    if size == 0:
        return "empty file (0 bytes)"
    if size < 12:
        return f"truncated ({size} bytes)"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(-4, os.SEEK_END)
            tail = f.read(4)
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if head != b"PAR1" or tail != b"PAR1":
        return "not a parquet file (no PAR1 magic)" if head != b"PAR1" else "truncated (no parquet footer)"
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415

        meta = pq.read_metadata(path)
        if meta.num_columns == 0:
            return "parquet file without columns"
    except Exception as exc:  # noqa: BLE001 - any parse failure makes the file unreadable
        return f"bad parquet footer: {' '.join(str(exc).split())[:200]}"
    return None


def _glob(base: Path, pattern: str) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(base.glob(pattern))


def scan(root: str | os.PathLike[str]) -> StoreFiles:
    """Every file of the store, split into readable rows / curves / history, unreadable ones and temp files."""
    root = Path(os.path.abspath(root))  # absolute: DuckDB names these paths back in its errors
    out = StoreFiles()
    for kind, base in (("rows", root), ("curves", root / CURVES_DIR), ("history", root / HISTORY_DIR)):
        for p in _glob(base, ROW_GLOB):
            if not p.is_file():
                continue
            reason = unreadable_reason(p)
            if reason is None:
                getattr(out, kind).append(p)
            else:
                out.bad[p] = reason
        out.temps += [p for p in _glob(base, f"suite=*/grid=*/.*{TMP_SUFFIX}") if p.is_file()]
    return out


def tmp_name(final: Path) -> Path:
    """The temp file a write of `final` goes through (never matched by the *.parquet globs)."""
    import uuid  # noqa: PLC0415

    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:60] or "host"
    return final.parent / f".{final.name}.{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"


def _writer_gone(tmp: Path, now: float) -> bool:
    """True when the process that wrote `tmp` cannot still be writing it."""
    try:
        age = now - tmp.stat().st_mtime
    except OSError:
        return False
    if age > STALE_TMP_S:
        return True
    # ".<final>.<host>-<pid>-<id>.tmp": on this host a dead pid means an abandoned write
    stem = tmp.name[: -len(TMP_SUFFIX)]
    host_pid = stem.rsplit(".", 1)[-1].rsplit("-", 1)[0]
    host, _, pid = host_pid.rpartition("-")
    me = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:60] or "host"
    if host not in ("", me) or not pid.isdigit():  # "": a name from before hosts were recorded
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def clean_temps(root: str | os.PathLike[str]) -> list[Path]:
    """Remove temp files that killed writers left behind (never one a live writer is still writing)."""
    now = time.time()
    removed = []
    for tmp in scan(root).temps:
        if _writer_gone(tmp, now):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


__all__ = ["CURVES_DIR", "HISTORY_DIR", "QUARANTINE_DIR", "ROW_GLOB", "StoreFiles", "clean_temps", "forget",
           "mark_bad", "scan", "tmp_name", "unreadable_reason"]
