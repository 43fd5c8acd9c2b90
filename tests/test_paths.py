"""Default paths come from grid/paths.py and do not depend on the working directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from grid import paths

ROOT = Path(__file__).resolve().parents[1]


def _clean_env(monkeypatch):
    for var in (paths.ROOT_ENV, paths.STORE_ENV):
        monkeypatch.delenv(var, raising=False)


def test_defaults_are_under_the_repository_whatever_the_cwd(monkeypatch, tmp_path):
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    root = ROOT / "benchmark"
    assert paths.benchmark_root() == root
    assert paths.store() == str(root / "results")
    assert paths.data_root() == str(root / "data")
    assert paths.ray_tmp() == str(root / "ray")
    assert paths.lm_data_dir("x") == str(root / "data" / "lm" / "x")


def test_environment_moves_them(monkeypatch, tmp_path):
    _clean_env(monkeypatch)
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path / "b"))
    assert paths.store() == str(tmp_path / "b" / "results")
    monkeypatch.setenv(paths.STORE_ENV, "rel-store")
    monkeypatch.chdir(tmp_path)
    assert paths.store() == str(tmp_path / "rel-store")  # a relative LINGRID_STORE: resolved once, absolute


def test_every_cli_uses_the_same_defaults(monkeypatch, tmp_path):
    """`grid run` and the MAD command, started from another folder, point at the same store, data and
    Tune storage as from the repository (no new ./benchmark, no second copy of the data)."""
    _clean_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    from evals.mad.run import build_parser
    from grid.lm.cli import _run_parser

    lm = _run_parser().parse_args(["g.yaml"])
    mad = build_parser("gla").parse_args([])
    assert lm.results == mad.results == paths.store()
    assert lm.ray_tmp_path == mad.ray_tmp_path == paths.ray_tmp()
    assert mad.data_path == paths.data_root()
    assert all(os.path.isabs(p) for p in (lm.results, lm.ray_tmp_path, mad.data_path))


def test_evals_mad_honours_lingrid_store(tmp_path):
    """`python -m evals.mad leaderboard` reads $LINGRID_STORE, as `python -m grid` does."""
    from grid.results.store import ResultsStore

    store = tmp_path / "store"
    row = {"trial_key": "k1", "suite": "mad", "grid": "mad", "status": "ok", "model_id": "gla", "task": "CR",
           "setting": "baseline", "acc": 0.5, "epochs": 2, "lr": 1e-3, "wd": 0.0}
    ResultsStore(store).write_row(row, suite="mad", grid="mad")
    env = {**os.environ, "LINGRID_STORE": str(store), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "evals.mad", "leaderboard"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "gla" in out.stdout and "0.500" in out.stdout
