"""The results store under a user's bad day (issue 21), no Ray: corrupt files, duplicate keys across
grids, --force history, stray temp files, a reader during writes, and user SQL that tries to write.

Each test names the defect it guards; each failed on the store before the fix.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grid.results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]


def _store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "store")
    for i in range(3):
        store.write_row({"trial_key": f"k{i}", "status": "ok", "val_loss": 1.0 + i, "model_id": "gla",
                         "scale": "cpu-tiny"}, suite="lm", grid="g")
        store.write_curve(f"k{i}", [{"step": 1, "train_loss": 2.0}], suite="lm", grid="g")
    return store


CORRUPTIONS = {
    "zero-byte row": ("suite=lm/grid=g/x.parquet", b""),
    "zero-byte curve": ("curves/suite=lm/grid=g/y.parquet", b""),
    "not parquet": ("suite=lm/grid=g/z.parquet", b"hello, this is not a parquet file at all"),
    "bad footer": ("suite=mad/grid=mad/w.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_one_bad_file_does_not_take_readers_down(tmp_path, capsys, case):
    """Defect: one zero-byte or corrupt parquet anywhere (curves/ included) crashed run/status/analyze and the
    MAD leaderboard, and made `plan` say '0 already ok'."""
    store = _store(tmp_path)
    rel, data = CORRUPTIONS[case]
    bad = store.root / rel
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(data)

    assert store.ok_keys() == {"k0", "k1", "k2"}
    assert len(store.df()) == 3 and len(store.query("SELECT * FROM curves")) == 3
    err = capsys.readouterr().err
    assert err.count("warning: skipped 1 unreadable file") == 1 and str(bad) in err  # one warning, naming it
    store.ok_keys()
    assert "warning" not in capsys.readouterr().err  # not repeated by the same reader

    from grid.analysis.cli import main as analyze
    from grid.run.status import status_main

    assert status_main(["--results", str(store.root), "--ray-tmp-path", str(tmp_path / "ray")]) == 0
    out = capsys.readouterr()
    assert "lm " in out.out and str(bad) in out.err
    assert analyze(["leaderboard", "--results", str(store.root)]) in (0, 1)
    assert "Traceback" not in capsys.readouterr().err

    from evals.mad.__main__ import main as mad_leaderboard

    assert mad_leaderboard(["leaderboard", "--results", str(store.root)]) == 1  # no MAD rows: said, not crashed
    assert "no MAD results" in capsys.readouterr().out


def test_plan_counts_stored_trials_despite_a_bad_file(tmp_path, capsys):
    """Defect: `grid plan` silently reported '0 already ok' when the store had one bad file."""
    from grid.lm.gridspec import expand, load_grid
    from grid.lm.cli import plan_main
    from tests.helpers import write_tiny_bytes_spec

    write_tiny_bytes_spec(tmp_path)
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndata: data.yaml\narchitectures: [{name: gla, mixer: gla}, {name: hgrn, mixer: hgrn}]\n"
                    "scales: [cpu-tiny]\n")
    assert plan_main([str(grid), "--results", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    data_hash = next(w for w in out.split() if w.startswith("spec-"))
    trials = expand(load_grid(grid), 257, data_hash, count=False)
    store = ResultsStore(tmp_path / "store")
    store.write_row({"trial_key": trials[0].trial_key, "status": "ok"}, suite="lm", grid="other-name")
    (store.root / "suite=lm" / "grid=g").mkdir(parents=True)
    (store.root / "suite=lm" / "grid=g" / f"{trials[1].trial_key}.parquet").write_bytes(b"")
    assert plan_main([str(grid), "--results", str(store.root)]) == 0
    captured = capsys.readouterr()
    assert "2 trial(s), 1 already ok" in captured.out  # stored under another grid name: still the same trial
    assert "unreadable" in captured.out and trials[1].trial_key in captured.err


def test_check_lists_and_quarantines(tmp_path, capsys):
    from grid.results.cli import main

    store = _store(tmp_path)
    for rel, data in CORRUPTIONS.values():
        (store.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (store.root / rel).write_bytes(data)
    dead_tmp = store.root / "suite=lm" / "grid=g" / ".k0.parquet.nohost-999999999-abcd1234.tmp"
    dead_tmp.write_bytes(b"partial")
    os.utime(dead_tmp, (time.time() - 7200, time.time() - 7200))
    assert main(["check", "--store", str(store.root)]) == 1
    out = capsys.readouterr().out
    assert out.count("unreadable: ") == len(CORRUPTIONS) and "temp file:" in out
    assert main(["check", "--store", str(store.root), "--quarantine"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert sum(ln.startswith("moved ") for ln in lines) == len(CORRUPTIONS) and any(ln.startswith("removed ") for ln in lines)
    for rel, data in CORRUPTIONS.values():
        assert not (store.root / rel).exists() and (store.root / "quarantine" / rel).read_bytes() == data
    assert main(["check", "--store", str(store.root)]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert store.ok_keys() == {"k0", "k1", "k2"} and "warning" not in capsys.readouterr().err


def test_one_row_per_trial_key_across_grids_and_history_on_rewrite(tmp_path):
    """Defects: dedup was per grid folder (a renamed grid stored duplicate keys); --force overwrote rows
    without history."""
    store = ResultsStore(tmp_path / "store")
    at = "2026-01-01T00:00:0{}+00:00"  # real rows carry it; history is ordered by it (ties: any order)
    store.write_row({"trial_key": "k", "status": "error", "error": "boom", "finished_at": at.format(1)},
                    suite="lm", grid="old")
    store.write_row({"trial_key": "k", "status": "ok", "val_loss": 1.5, "finished_at": at.format(2)}, suite="lm", grid="old")
    store.write_row({"trial_key": "k", "status": "ok", "val_loss": 1.25, "finished_at": at.format(3)},
                    suite="lm", grid="renamed")
    rows = store.query("SELECT grid, val_loss FROM results WHERE trial_key = 'k'")
    assert rows.to_dict("records") == [{"grid": "renamed", "val_loss": 1.25}]
    hist = store.query("SELECT grid, status, val_loss FROM history ORDER BY finished_at")
    assert hist["status"].tolist() == ["error", "ok"] and hist["grid"].tolist() == ["old", "old"]
    assert hist["val_loss"].iloc[1] == 1.5
    store.write_curve("k", [{"step": 1, "loss": 3.0}], suite="lm", grid="old")
    store.write_curve("k", [{"step": 1, "loss": 2.0}], suite="lm", grid="renamed")
    assert store.query("SELECT grid, loss FROM curves").to_dict("records") == [{"grid": "renamed", "loss": 2.0}]
    assert len(list((store.root / "history" / "curves").rglob("*.parquet"))) == 1


def test_a_rewrite_puts_an_unreadable_old_file_in_quarantine(tmp_path, capsys):
    store = ResultsStore(tmp_path / "store")
    bad = store.path_for("k", "lm", "g")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")
    store.write_row({"trial_key": "k", "status": "ok"}, suite="lm", grid="g")
    assert store.ok_keys() == {"k"} and store.query("SELECT count(*) AS n FROM history")["n"][0] == 0
    assert len(list((store.root / "quarantine").rglob("k@*.parquet"))) == 1
    assert "warning" not in capsys.readouterr().err


def test_temp_files_of_dead_writers_are_cleaned_live_ones_kept(tmp_path):
    """Defect: temp files from killed writes were never cleaned (33 after 52 kills)."""
    from grid.results.scan import tmp_name

    store = _store(tmp_path)
    part = store.root / "suite=lm" / "grid=g"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = tmp_name(part / "k0.parquet")  # this process: a write in progress
    live.write_bytes(b"x")
    orphan = Path(str(live).replace(f"-{os.getpid()}-", f"-{dead_pid}-"))
    orphan.write_bytes(b"x")
    legacy = part / f".k1.parquet.{dead_pid}-0123abcd.tmp"  # the name older versions wrote
    legacy.write_bytes(b"x")
    foreign = part / f".k2.parquet.otherhost-{dead_pid}-0123abcd.tmp"  # another host: its pid means nothing here
    foreign.write_bytes(b"x")
    removed = store.clean_temps()
    assert sorted(removed) == sorted([orphan, legacy])
    assert live.exists() and foreign.exists()
    os.utime(foreign, (time.time() - 7200, time.time() - 7200))
    assert store.clean_temps() == [foreign]


def test_duckdb_error_on_a_file_with_a_good_footer_skips_it(tmp_path, capsys):
    """A file whose footer parses but whose data does not: the query runs again without it."""
    store = _store(tmp_path)
    path = store.path_for("k1", "lm", "g")
    raw = bytearray(path.read_bytes())
    for i in range(8, len(raw) // 3):  # scramble the data pages, keep the footer
        raw[i] = 0xFF
    path.write_bytes(bytes(raw))
    df = store.df()
    assert set(df["trial_key"]) <= {"k0", "k1", "k2"} and {"k0", "k2"} <= set(df["trial_key"])


def test_concurrent_reader_sees_no_errors_during_writes(tmp_path):
    """A reader polls while a writer (another process) publishes and rewrites rows: no error, no partial row."""
    store = ResultsStore(tmp_path / "store")
    store.write_row({"trial_key": "seed", "status": "ok"}, suite="lm", grid="g")
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from grid.results.store import ResultsStore\n"
        "s = ResultsStore(sys.argv[1])\n"
        "for i in range(150):\n"
        "    s.write_row({'trial_key': f'k{i % 40}', 'status': 'ok', 'i': i}, suite='lm', grid=f'g{i % 3}')\n"
        "    s.write_curve(f'k{i % 40}', [{'step': j, 'loss': 1.0} for j in range(5)], suite='lm', grid=f'g{i % 3}')\n"
        "    time.sleep(0.02)\n"),
        str(store.root)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    errors, polls, seen = [], 0, 0
    deadline = time.time() + 120
    while writer.poll() is None and time.time() < deadline:
        try:
            df = store.query("SELECT trial_key, count(*) AS n FROM results GROUP BY trial_key")
            seen = max(seen, len(df))
            store.query("SELECT count(*) FROM curves")
        except Exception as exc:  # noqa: BLE001 - counted, the test fails below
            errors.append(repr(exc))
        polls += 1
        time.sleep(0.05)
    assert writer.wait(timeout=60) == 0
    print(f"FIGURES {{\"writes\": 300, \"polls\": {polls}, \"errors\": {len(errors)}}}")
    assert errors == [] and polls > 5 and seen >= 2
    final = store.query("SELECT trial_key, count(*) AS n FROM results GROUP BY trial_key")
    assert len(final) == 41 and (final["n"] == 1).all()
    assert not list(store.root.rglob("*.tmp"))


SQL_WRITE_ATTEMPTS = [
    "COPY (SELECT 1 AS x) TO '{target}' (FORMAT parquet)",
    "COPY results TO '{root}/dump.csv'",
    "EXPORT DATABASE '{root}/export'",
    "ATTACH '{root}/evil.duckdb' AS evil",
    "ATTACH ':memory:' AS m",
    "CREATE TABLE t AS SELECT 1",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "CREATE OR REPLACE VIEW results AS SELECT 1 AS trial_key",
    "DROP VIEW results",
    "INSERT INTO results SELECT * FROM results",
    "UPDATE results SET status = 'error'",
    "DELETE FROM results",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "PRAGMA enable_profiling",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CHECKPOINT",
    "VACUUM",
    "SELECT 1; COPY (SELECT 1) TO '{target}'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('{root}/../outside.txt')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '{outside}'",
    "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
    "",
    "   ",
]


def test_results_query_is_read_only(tmp_path, capsys):
    """Defect: `results query` ran any SQL: a COPY overwrote a finished trial's file; ATTACH, CREATE and
    file reads outside the store worked too."""
    from grid.results.cli import main

    store = _store(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    target = store.path_for("k0", "lm", "g")

    def snapshot():
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}

    before = snapshot()
    refused = 0
    for template in SQL_WRITE_ATTEMPTS:
        sql = template.format(target=target, root=store.root, outside=outside)
        rc = main(["query", sql, "--store", str(store.root)])
        err = capsys.readouterr().err
        assert rc == 2, (sql, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (sql, err)
        refused += 1
    assert snapshot() == before  # nothing written, nothing replaced
    assert refused == len(SQL_WRITE_ATTEMPTS) >= 25
    # reading still works, including the history view and a CTE
    assert main(["query", "WITH x AS (SELECT * FROM results) SELECT count(*) AS n FROM x", "--store",
                 str(store.root), "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["n", "3"]
