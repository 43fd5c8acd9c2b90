"""`python -m grid results ...`: query formats, show, exit codes, no torch import."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grid.results.cli import main
from grid.results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def store(tmp_path):
    s = ResultsStore(tmp_path / "store")
    s.write_row({"trial_key": "a", "status": "ok", "mixer": "gla", "acc": 0.75, "lr": 1e-3}, "mad", "g")
    s.write_row({"trial_key": "b", "status": "error", "mixer": "mamba", "error": "Traceback\nValueError: boom"}, "mad", "g")
    return s


def test_query_formats(store, capsys):
    assert main(["query", "SELECT trial_key, acc FROM results ORDER BY trial_key", "--store", str(store.root), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"trial_key": "a", "acc": 0.75}, {"trial_key": "b", "acc": None}]
    assert main(["query", "SELECT count(*) AS n FROM results", "--store", str(store.root), "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["n", "2"]
    assert main(["query", "SELECT mixer FROM results WHERE status='ok'", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "gla" in out and "mamba" not in out and "(1 row)" in out
    # --results (the name `grid run` and the MAD commands use) is the same option
    assert main(["query", "SELECT count(*) AS n FROM results", "--results", str(store.root), "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["n", "2"]


def test_show(store, capsys):
    assert main(["show", "--store", str(store.root), "--suite", "mad"]) == 0
    out = capsys.readouterr().out
    assert "gla" in out and "mamba" in out and "ValueError: boom" in out and "acc" in out
    assert main(["show", "--store", str(store.root), "--status", "ok", "--format", "json"]) == 0
    assert [r["trial_key"] for r in json.loads(capsys.readouterr().out)] == ["a"]


def test_bad_sql_exit_code_2_no_traceback(store, capsys):
    assert main(["query", "SELEC nonsense", "--store", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "syntax error" in err.lower() and "Traceback" not in err
    assert main(["query", "SELECT no_such_column FROM results", "--store", str(store.root)]) == 2
    assert "no_such_column" in capsys.readouterr().err
    assert main(["bogus-subcommand"]) == 2


def test_empty_store_query(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["query", "SELECT * FROM results", "--store", str(tmp_path / "empty"), "--format", "csv"]) == 0
    header = capsys.readouterr().out.strip().split(",")
    assert header[:4] == ["trial_key", "suite", "grid", "status"]
    # a store that is not there is a typo, not an empty table (issue 21: it used to print 0 rows)
    assert main(["query", "SELECT * FROM results", "--store", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--store" in err and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_is_light(store):
    """`python -m grid results query` works as a process, exits 2 on bad SQL, and never imports torch."""
    code = ("import sys; from grid.__main__ import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules and 'fla' not in sys.modules and 'triton' not in sys.modules; sys.exit(rc)")
    ok = subprocess.run([sys.executable, "-c", code, "results", "query", "SELECT count(*) AS n FROM results",
                         "--store", str(store.root), "--format", "csv"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["n", "2"]
    bad = subprocess.run([sys.executable, "-m", "grid", "results", "query", "SELECT FROM WHERE", "--store", str(store.root)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "error:" in bad.stderr
