"""Kill the driver (SIGKILL) at random points of a small grid, resume, repeat: 0 rows lost, 0 trial keys
duplicated, 0 stored trials run again, no temp file left, no Ray process of a killed driver left running.

Every driver is a subprocess with its own embedded Ray (the test process never starts Ray). Only
the driver's pid is killed (as `kill -9 PID` would): what it started must go away by itself (Ray's
fate-sharing, and lingrid's reaper for the two agents Ray 2.60 leaves behind). The figures of a run
go to docs/reliability.md.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from grid.results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
N_TRIALS = 6
KILLS = 4
SEED = 21

DRIVER = textwrap.dedent("""
    import json, sys
    from grid.results.store import ResultsStore
    from grid.run.runner import run_trials
    from grid.run.spec import make_trial

    base = sys.argv[1]
    trials = [make_trial({"x": i, "steps": 3, "sleep_s": 1.5, "store": base + "/store", "log": base + "/runs.log",
                          "ckpt_root": base + "/ckpt"}, suite="test", grid="resume",
                         trainable="tests.stub_trials:logged_trial", columns={"seed": i}) for i in range(%d)]
    s = run_trials(trials, store=ResultsStore(base + "/store"), experiment="killme",
                   storage_dir=base + "/ray", num_cpus=2, num_gpus=0)
    print("SUMMARY " + json.dumps({"n_skipped": s.n_skipped, "n_ok": s.n_ok, "n_failed": s.n_failed,
                                   "restored": s.restored, "missing": s.missing}), flush=True)
""" % N_TRIALS)


def _session_pids(sid: int) -> list[int]:
    """Live processes in the session the killed driver led (its Ray daemons and workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid and not Path(f"/proc/{entry}/stat").read_text().split(")")[1].split()[0] == "Z":
                    out.append(int(entry))
            except (OSError, IndexError):
                pass
    return out


def _env():
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _kill_session(sid: int) -> None:
    for pid in _session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.slow
def test_kill_driver_at_random_points_then_resume(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    store = ResultsStore(tmp_path / "store")
    rng = random.Random(SEED)
    # kill points: one during Ray's start-up, then at random moments after 0..N-1 rows are stored
    # (a trial running, one just stored, a pack of Tune state not yet snapshotted ...)
    points = [("start", rng.uniform(1.0, 4.0))] + [("rows", k) for k in sorted(rng.sample(range(N_TRIALS - 1),
                                                                                      KILLS - 1))]
    kills, survivors, stored_at_kill = 0, [], []
    for i, (kind, value) in enumerate(points):
        log = open(tmp_path / f"driver{i}.log", "w")
        p = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=_env(),
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        t0, deadline = time.time(), time.time() + 240
        runs_file = tmp_path / "runs.log"
        while p.poll() is None and time.time() < deadline:
            if kind == "start" and time.time() - t0 >= value:
                break
            n_rows = len(list((tmp_path / "store").glob("suite=*/grid=*/*.parquet")))
            running = runs_file.exists() and len(runs_file.read_text().splitlines()) > n_rows
            if kind == "rows" and n_rows >= value and running:
                time.sleep(rng.uniform(0.0, 1.5))  # somewhere inside the next trials
                break
            time.sleep(0.05)
        if p.poll() is not None:  # the grid finished before this kill
            log.close()
            break
        os.kill(p.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID`
        p.wait()
        log.close()
        kills += 1
        stored_at_kill.append(len(list((tmp_path / "store").glob("suite=*/grid=*/*.parquet"))))
        deadline = time.time() + 30  # what the driver started goes away by itself
        while _session_pids(p.pid) and time.time() < deadline:
            time.sleep(0.2)
        left = _session_pids(p.pid)
        survivors.append(len(left))
        _kill_session(p.pid)  # never leave them to the next test, even when this one fails below

    r = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=400, start_new_session=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    assert summary["missing"] == [] and summary["n_failed"] == 0

    df = store.query("SELECT trial_key, count(*) AS n, min(status) AS status FROM results GROUP BY trial_key")
    runs = (tmp_path / "runs.log").read_text().splitlines()
    figures = {"kills": kills, "rows stored at each kill": stored_at_kill, "survivors after each kill": survivors,
               "executions": len(runs), "re-runs of stored trials": sum("RERUN" in ln for ln in runs),
               "rows": int(df["n"].sum()), "trial keys": len(df)}
    print("FIGURES " + json.dumps(figures))
    assert kills == KILLS and max(stored_at_kill) >= 1, figures  # killed mid-grid, more than once
    assert len(df) == N_TRIALS and (df["n"] == 1).all() and (df["status"] == "ok").all(), figures  # 0 lost, 0 dup
    assert figures["re-runs of stored trials"] == 0, runs  # 0 re-run after resume
    assert survivors == [0] * kills, figures  # no Ray process outlives its killed driver
    assert sorted(store.df()["seed"]) == list(range(N_TRIALS))
    leftovers = [p.name for p in (tmp_path / "store").rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    assert leftovers == []  # no temp file of a killed write
    assert summary["n_skipped"] + summary["n_ok"] == N_TRIALS
