"""`python -m grid results rekey [--store DIR] [--dry-run]`: move a store onto today's trial-key rule.

Why: trial keys now hash each trial's hashed block by one rule (grid/keys.py), and that block gained what
earlier keys missed (the device class a trial ran on; for MAD the model as configs/mad/architectures.yaml
resolves it, and compile where it took effect). Rows written before carry keys of the old rule: without
this command a resubmitted grid would run them again, and a GPU run could still be skipped because of
an ok CPU row of the same config.

For every row, its suite (grid/run/suites.py: `upgrade_row`) rewrites the stored config under today's
rule from what the row recorded (its `device`, `compiled`, `gpu_index` columns); the new key is
grid.keys.trial_key of the hashed block. A row whose key changes is written under the new key with
`rekeyed_from` = its first key (Tune's trial directory still has that name: `grid export` looks there
too); the old file goes to history/, its curve moves along. A row its suite cannot place (e.g. a MAD
row whose parameter count says it was made under an earlier architecture entry) keeps its old key:
no new trial counts it as done. Rows of suites without `upgrade_row` are left alone. Running the
command again changes nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grid.keys import canonical_json, trial_key
from grid.results import scan as _scan
from grid.results.schema import REKEYED_FROM
from grid.results.store import ResultsStore
from grid.run.suites import SUITES, SuiteError, get_suite

# Lazy here: pyarrow (optional or slow to import: only the paths that use them)


@dataclass
class Change:
    path: Path
    suite: str
    grid: str
    old: str
    new: str
    row: dict[str, Any]  # the row as it will be written


@dataclass
class RekeyReport:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (suite, trial_key, why)
    superseded: list[str] = field(default_factory=list)                # old keys whose new key had a newer row
    applied: bool = False

    def lines(self) -> list[str]:
        verb = "re-keyed" if self.applied else "would re-key"
        out = [f"{verb} {sum(c.old != c.new for c in self.changes)} row(s), updated the config of "
               f"{sum(c.old == c.new for c in self.changes)}, {self.unchanged} already current, "
               f"{len(self.skipped)} left with their old key"]
        out += [f"  {c.suite}/{c.grid}: {c.old} -> {c.new}" for c in self.changes if c.old != c.new]
        out += [f"  left {s}/{k}: {why}" for s, k, why in self.skipped]
        out += [f"  {k}: its new key already had a newer row; this one went to history/" for k in self.superseded]
        return out


def _read_row(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    rows = pq.read_table(path).to_pylist()
    if len(rows) != 1:
        raise ValueError(f"{path} holds {len(rows)} rows, not one")
    return rows[0]


def plan_rekey(root: str | Path) -> RekeyReport:
    """What `rekey` would change in the store at `root` (nothing is written)."""
    report = RekeyReport()
    by_suite: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in _scan.scan(root).rows:
        row = _read_row(path)
        by_suite.setdefault(str(row.get("suite")), []).append((path, row))
    renamed: dict[str, str] = {}
    for name in [*[n for n in SUITES if n in by_suite], *sorted(set(by_suite) - set(SUITES))]:
        try:
            module = get_suite(name)
        except SuiteError:
            module = None
        for path, row in by_suite[name]:
            if module is None or not hasattr(module, "upgrade_row"):
                report.unchanged += 1
                continue
            try:
                config = json.loads(row.get("config_json") or "null")
                if not isinstance(config, dict):
                    raise ValueError("no config_json")
                new_config, updates = module.upgrade_row(config, row, renamed)
            except (ValueError, TypeError, KeyError) as exc:
                report.skipped.append((name, row["trial_key"], " ".join(str(exc).split())[:300]))
                continue
            hashed = {k: v for k, v in new_config.items() if k not in module.RUNTIME_FIELDS}
            new_key = trial_key(name, hashed)
            new_json = canonical_json(new_config)
            if new_key == row["trial_key"] and new_json == canonical_json(config) and not updates:
                report.unchanged += 1
                continue
            out = {**row, **updates, "trial_key": new_key, "config_json": new_json}
            if new_key != row["trial_key"]:
                renamed[row["trial_key"]] = new_key
                out[REKEYED_FROM] = row.get(REKEYED_FROM) or row["trial_key"]
            report.changes.append(Change(path, name, str(row["grid"]), row["trial_key"], new_key, out))
    return report


def _finished(row: dict[str, Any]):
    return row.get("finished_at") or row.get("started_at")


def rekey(root: str | Path, dry_run: bool = False) -> RekeyReport:
    """Re-key the store at `root` (see the module docstring); `dry_run` only reports."""

    report = plan_rekey(root)
    if dry_run:
        return report
    store = ResultsStore(root)
    moving = {c.path for c in report.changes}
    for c in report.changes:
        others = [p for p in store.files_of(c.new) if p != c.path and p not in moving]
        if c.new != c.old and any(_finished(_read_row(p)) and _finished(c.row) and
                                  _finished(_read_row(p)) > _finished(c.row) for p in others):
            store.retire(c.path)
            report.superseded.append(c.old)
            continue
        store.write_row(c.row, suite=c.suite, grid=c.grid)
        if c.new == c.old:
            continue
        store.retire(c.path)
        for curve in store.files_of(c.old, curves=True):
            import pyarrow.parquet as pq  # noqa: PLC0415

            points = pq.read_table(curve).to_pylist()
            store.write_curve(c.new, points, suite=c.suite, grid=curve.parent.name.removeprefix("grid="))
            store.retire(curve, curves=True)
    report.applied = True
    return report


__all__ = ["Change", "RekeyReport", "plan_rekey", "rekey"]
