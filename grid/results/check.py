"""Store health: what `python -m grid results check` reports and, with --quarantine, repairs.

Problems it finds:
* unreadable files (zero bytes, truncated, not parquet) among rows, curves and history: readers
  already skip them; quarantine moves them to `<root>/quarantine/` (same relative path), so
  nothing is deleted and the trials they held run again at the next `run`.
* temp files of writes that a killed process left (quarantine removes those whose writer is gone).
* a trial_key with rows in more than one grid folder (a store written before dedup covered the
  whole store): quarantine keeps the newest row in place and the others in `history/`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from grid.results import scan as _scan
from grid.results.store import _keep, _stamp


@dataclass
class CheckReport:
    root: Path
    n_rows: int = 0
    n_curves: int = 0
    n_history: int = 0
    bad: dict[Path, str] = field(default_factory=dict)
    temps: list[Path] = field(default_factory=list)
    duplicates: dict[str, list[Path]] = field(default_factory=dict)  # trial_key -> its row files
    moved: list[tuple[Path, Path]] = field(default_factory=list)     # (from, to) done by quarantine
    removed: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad or self.temps or self.duplicates)

    def lines(self) -> list[str]:
        out = [f"results store {self.root}: {self.n_rows} row file(s), {self.n_curves} curve file(s), "
               f"{self.n_history} history file(s)"]
        for p, why in sorted(self.bad.items()):
            out.append(f"unreadable: {p}: {why}")
        for p in self.temps:
            out.append(f"temp file: {p}")
        for key, paths in sorted(self.duplicates.items()):
            out.append(f"trial_key {key} has {len(paths)} rows: {', '.join(str(p) for p in paths)}")
        for src, dst in self.moved:
            out.append(f"moved {src} -> {dst}")
        for p in self.removed:
            out.append(f"removed {p}")
        if self.ok and not self.moved and not self.removed:
            out.append("no problems found")
        return out


def check_store(root: str | os.PathLike[str]) -> CheckReport:
    root = Path(os.path.abspath(root))
    files = _scan.scan(root)
    rep = CheckReport(root, len(files.rows), len(files.curves), len(files.history), dict(files.bad), list(files.temps))
    by_key: dict[str, list[Path]] = {}
    for p in files.rows:
        by_key.setdefault(p.stem, []).append(p)
    rep.duplicates = {k: v for k, v in by_key.items() if len(v) > 1}
    return rep


def quarantine(root: str | os.PathLike[str]) -> CheckReport:
    """Repair what check_store finds (see the module docstring); the report lists every move."""

    root = Path(os.path.abspath(root))
    rep = check_store(root)
    stamp = _stamp()
    for p in sorted(rep.bad):
        dst = root / _scan.QUARANTINE_DIR / p.relative_to(root)
        if dst.exists():
            dst = dst.with_name(f"{dst.stem}@{stamp}{dst.suffix}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dst)
        _scan.forget(p)
        rep.moved.append((p, dst))
    rep.removed = _scan.clean_temps(root)
    for key, paths in rep.duplicates.items():
        newest = max(paths, key=lambda q: q.stat().st_mtime_ns)
        for p in paths:
            if p == newest:
                continue
            hist = root / _scan.HISTORY_DIR / p.relative_to(root)
            hist = hist.with_name(f"{hist.stem}@{stamp}{hist.suffix}")
            _keep(p, hist)
            p.unlink()
            rep.moved.append((p, hist))
    after = check_store(root)
    rep.bad, rep.duplicates = after.bad, after.duplicates
    rep.temps = after.temps
    return rep


__all__ = ["CheckReport", "check_store", "quarantine"]
