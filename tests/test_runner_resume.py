"""Kill the driver (SIGKILL) mid-grid, resume: nothing lost, nothing duplicated.

Both drivers are subprocesses with their own embedded Ray (the test process never starts Ray).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from grid.results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
N_TRIALS = 4

DRIVER = textwrap.dedent("""
    import json, sys
    from grid.results.store import ResultsStore
    from grid.run.runner import run_trials
    from grid.run.spec import make_trial

    base = sys.argv[1]
    trials = [make_trial({"x": i, "steps": 2, "sleep_s": 1.5}, suite="test", grid="resume",
                         trainable="tests.stub_trials:ok_trial", columns={"seed": i}) for i in range(%d)]
    s = run_trials(trials, store=ResultsStore(base + "/store"), experiment="killme",
                   storage_dir=base + "/ray", num_cpus=2, num_gpus=0)
    print("SUMMARY " + json.dumps({"n_skipped": s.n_skipped, "n_ok": s.n_ok, "n_failed": s.n_failed,
                                   "restored": s.restored, "missing": s.missing}), flush=True)
""" % N_TRIALS)


def _session_pids(sid: int) -> list[int]:
    """Processes in the session the killed driver led (its Ray daemons and workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def _env():
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


@pytest.mark.slow
def test_kill_driver_then_resume(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    rows = tmp_path / "store"
    log1 = open(tmp_path / "driver1.log", "w")
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=_env(),
                         stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 150
        while not list(rows.glob("suite=*/grid=*/*.parquet")):
            assert p.poll() is None, (tmp_path / "driver1.log").read_text()[-3000:]
            assert time.time() < deadline, "no trial finished in time:\n" + (tmp_path / "driver1.log").read_text()[-3000:]
            time.sleep(0.1)
    finally:
        # crash the driver and everything it started (Ray daemons and workers share its session)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        for pid in _session_pids(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        log1.close()
    n_before = len(ResultsStore(rows).ok_keys())
    assert 1 <= n_before < N_TRIALS, "the first driver should have been killed mid-grid"

    r = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=240, start_new_session=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["n_skipped"] == n_before
    assert summary["n_ok"] == N_TRIALS - n_before and summary["missing"] == [] and summary["n_failed"] == 0

    store = ResultsStore(rows)
    df = store.query("SELECT trial_key, count(*) AS n, min(status) AS status FROM results GROUP BY trial_key")
    assert len(df) == N_TRIALS
    assert (df["n"] == 1).all() and (df["status"] == "ok").all()
    assert sorted(store.df()["seed"]) == list(range(N_TRIALS))
    # exactly one file per trial on disk, no temp files left behind
    files = sorted(p.name for p in rows.rglob("*") if p.is_file())
    assert len(files) == N_TRIALS and all(f.endswith(".parquet") and not f.startswith(".") for f in files)
