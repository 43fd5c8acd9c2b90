"""`python -m grid submit` against a real two-node Ray cluster on loopback (issue 21).

The test starts a Ray head with the Jobs server and a second worker node (`ray start`, free ports,
own temp dirs: tests/ray_cluster.py), submits tests/grids/cluster.yaml with the submit defaults,
kills the worker node while the grid runs, and checks that the job exits 0 with every row stored
exactly once; then stops both nodes by the processes it started. The nodes get their own data
caches, so the worker node must prepare the grid's data itself (no shared data dir), and their
own HOME, where the defaults (~/lingrid/results, ~/lingrid/ray) land.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray.job_submission")
pytest.importorskip("aiohttp")  # the Jobs server (ray[default], the `cluster` extra)

from grid.results.store import ResultsStore  # noqa: E402
from tests.ray_cluster import LocalCluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRID = "tests/grids/cluster.yaml"
N_TRIALS = 6


def _manifest(cache: Path) -> dict | None:
    found = sorted(cache.glob("*/manifest.json")) if cache.is_dir() else []
    return json.loads(found[0].read_text()) if found else None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_submit_to_two_nodes_survives_a_dead_worker_node(tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "disabled"}
    caches = {"head": tmp_path / "head-cache", "worker": tmp_path / "worker-cache"}
    store = ResultsStore(home / "lingrid" / "results")
    figures: dict = {}
    with LocalCluster(tmp_path, head_cpus=1, worker_cpus=2, env=env) as cluster:
        cluster.start_head({"LINGRID_DATA_CACHE": str(caches["head"])})
        worker = cluster.start_worker("worker", {"LINGRID_DATA_CACHE": str(caches["worker"])})
        r = subprocess.run([sys.executable, "-m", "grid", "submit", GRID, "--address", cluster.dashboard_url,
                            "--submission-id", "lingrid-cluster-test"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        client = JobSubmissionClient(cluster.dashboard_url)
        killed_at, deadline = None, time.time() + 600
        while time.time() < deadline:
            status = client.get_job_status("lingrid-cluster-test")
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                break
            n_rows = len(list(store.root.glob("suite=*/grid=*/*.parquet"))) if store.root.is_dir() else 0
            if killed_at is None and n_rows >= 1 and n_rows < N_TRIALS and _manifest(caches["worker"]):
                worker.kill()  # the node dies mid-grid, as a machine would
                killed_at = n_rows
            time.sleep(0.5)
        logs = client.get_job_logs("lingrid-cluster-test")
        assert status == JobStatus.SUCCEEDED, logs[-5000:]
        figures["rows stored when the worker node was killed"] = killed_at
        assert killed_at is not None, "the grid finished before the worker node could be killed"

    assert "each node prepares the data in its cache" in logs
    df = store.query("SELECT trial_key, count(*) AS n, min(status) AS status, max(attempt) AS attempt "
                     "FROM results GROUP BY trial_key")
    figures.update(rows=int(df["n"].sum()), keys=len(df), retried=int((df["attempt"] > 1).sum()))
    print("FIGURES " + json.dumps(figures))
    assert len(df) == N_TRIALS and (df["n"] == 1).all() and (df["status"] == "ok").all(), (figures, logs[-3000:])
    head, work = _manifest(caches["head"]), _manifest(caches["worker"])
    assert head and work and head["content_hash"] == work["content_hash"]  # prepared where it ran, same data
    # the failures of issue 21 are gone (Tune's own report of the dead node's trials is expected in the logs)
    assert "FileNotFoundError" not in logs and "ModuleNotFoundError" not in logs and "manifest.json" not in logs
    assert not list((home / "lingrid" / "results").rglob("*.tmp"))


def test_nodes_of_one_machine_sharing_a_temp_dir_are_refused():
    """Two `ray start` on one machine without their own --temp-dir: Ray deletes the job's working dir under the
    running driver (issue 21's 'No module named ...' and FileNotFoundError); refused before the grid starts."""
    from grid.run.reach import shared_temp_dir

    def node(nid, ip, tmp):
        return {"NodeID": nid, "NodeManagerAddress": ip, "Alive": True,
                "ObjectStoreSocketName": f"{tmp}/session_1/sockets/plasma_store"}

    assert shared_temp_dir([node("a" * 8, "127.0.0.1", "/tmp/ray"), node("b" * 8, "127.0.0.1", "/tmp/ray2")]) is None
    assert shared_temp_dir([node("a" * 8, "10.0.0.1", "/tmp/ray"), node("b" * 8, "10.0.0.2", "/tmp/ray")]) is None
    msg = shared_temp_dir([node("a" * 8, "127.0.0.1", "/tmp/ray"), node("b" * 8, "127.0.0.1", "/tmp/ray")])
    assert msg and "--temp-dir" in msg and "/tmp/ray" in msg
