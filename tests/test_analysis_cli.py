"""`python -m grid analyze ...`: empty store, scaling table, leaderboard, bad arguments, light imports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grid.analysis.cli import main
from grid.analysis.synthetic import write_synthetic_ladder
from grid.results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder")
    write_synthetic_ladder(root, archs={"gla": 1.0, "transformer": 1.05}, steps=30)
    return root


@pytest.mark.parametrize("cmd", [["scaling"], ["leaderboard"], ["plots", "--out", "PLOTS"]])
def test_empty_store_exit_1_clear_message(tmp_path, capsys, cmd):
    cmd = [str(tmp_path / "p") if c == "PLOTS" else c for c in cmd]
    assert main(cmd + ["--results", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "no LM trials" in err and "does not exist" in err and "Traceback" not in err
    # a store holding only MAD rows has no LM trials either
    ResultsStore(tmp_path / "mad").write_row({"trial_key": "x", "status": "ok"}, "mad", "g")
    assert main(cmd + ["--results", str(tmp_path / "mad")]) == 1
    assert "no LM trials" in capsys.readouterr().err


def test_empty_store_as_process(tmp_path):
    p = subprocess.run([sys.executable, "-m", "grid", "analyze", "scaling", "--results", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "no LM trials" in p.stderr and "Traceback" not in p.stderr


def test_scaling_table_and_json(ladder, capsys):
    assert main(["scaling", "--results", str(ladder)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "PFLOP/s-days" in lines[0]
    assert lines[1].split()[:5] == ["architecture", "L(C)", "R²", "N_opt(C)", "D_opt(C)"]
    gla = next(line for line in lines if line.startswith("gla "))
    assert "·C^-0." in gla and "·C^+0." in gla  # loss falls, N_opt and D_opt grow with compute
    assert main(["scaling", "--results", str(ladder), "--format", "json", "--grid", "synthetic"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["architecture"] for r in rows] == ["gla", "transformer"]
    assert all(r["n_trials"] == 4 and r["n_sizes"] == 4 and r["L_alpha"] < 0 < r["N_alpha"] for r in rows)
    assert main(["scaling", "--results", str(ladder), "--grid", "other"]) == 1


def test_leaderboard_cli(ladder, capsys):
    assert main(["leaderboard", "--results", str(ladder), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.count("### scale ") == 4 and "| # | arch |" in out
    s1 = out[out.index("### scale s1"):out.index("### scale s2")]
    assert s1.index("| gla ") < s1.index("| transformer ")  # lower val loss first


def test_bad_arguments(capsys):
    assert main([]) == 2
    assert main(["bogus"]) == 2
    assert main(["plots"]) == 2  # --out is required
    assert main(["scaling", "--points", "1", "--results", "x"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_cli_imports_no_torch():
    code = ("import sys, grid.analysis.cli, grid.analysis.scaling, grid.analysis.leaderboard; "
            "print('torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "False", p.stderr
