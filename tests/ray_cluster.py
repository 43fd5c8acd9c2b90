"""A real two-node Ray cluster on loopback for the tests: `ray start --head` (with the dashboard, i.e. the
Jobs server) and `ray start --address` for a second worker node, each its own process session.

Every port is picked free at run time (other people run Ray on this machine too), every node gets
its own temp dir, and nodes are stopped by the processes this module started (their sessions),
never by `ray stop` (which would stop everybody's Ray on the machine).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RAY = [sys.executable, "-m", "ray.scripts.scripts"]


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def session_pids(sid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


class Node:
    def __init__(self, proc: subprocess.Popen, log: Path, label: str):
        self.proc, self.log, self.label = proc, log, label

    def kill(self) -> None:
        """SIGKILL every process of this node (a node that dies, as a machine would)."""
        for pid in session_pids(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def alive(self) -> bool:
        return bool([p for p in session_pids(self.proc.pid) if p != self.proc.pid]) or self.proc.poll() is None


def _node_ports() -> list[str]:
    (nm, om, mx, ag_grpc, ag_http, rt_env, client, lo) = free_ports(8)
    # worker ports: a range of its own (free now; 40 ports are plenty for a few workers)
    base = lo
    return ["--node-manager-port", str(nm), "--object-manager-port", str(om), "--metrics-export-port", str(mx),
            "--dashboard-agent-grpc-port", str(ag_grpc), "--dashboard-agent-listen-port", str(ag_http),
            "--runtime-env-agent-port", str(rt_env), "--ray-client-server-port", str(client),
            "--min-worker-port", str(base), "--max-worker-port", str(base + 40)]


class LocalCluster:
    """head (Jobs server on `dashboard_url`) + one worker node; a context manager that stops both."""

    def __init__(self, root: Path, head_cpus: int = 1, worker_cpus: int = 2, env: dict | None = None):
        self.root = Path(root)
        # Ray's unix sockets live in the temp dir and their paths may not exceed 107 bytes: a short dir
        self.short = Path(tempfile.mkdtemp(prefix="lg-", dir="/tmp"))
        self.head_cpus, self.worker_cpus = head_cpus, worker_cpus
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("RAY_AUTH_MODE", "disabled")
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"
        # a dead node is noticed within seconds, not the default ~30 s
        self.env.setdefault("RAY_health_check_period_ms", "1000")
        self.env.setdefault("RAY_health_check_timeout_ms", "1000")
        self.env.setdefault("RAY_health_check_failure_threshold", "3")
        self.nodes: list[Node] = []
        self.gcs_port, self.dash_port = free_ports(2)
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dash_port}"

    def _start(self, label: str, args: list[str], env: dict | None = None) -> Node:
        log = self.root / f"{label}.log"
        fh = open(log, "w")
        proc = subprocess.Popen([*RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address", "127.0.0.1",
                                 *args], env={**self.env, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        node = Node(proc, log, label)
        self.nodes.append(node)
        return node

    def start_head(self, env: dict | None = None) -> Node:
        tmp = self.short / "h"
        tmp.mkdir(parents=True, exist_ok=True)
        node = self._start("head", ["--head", "--port", str(self.gcs_port), "--num-cpus", str(self.head_cpus),
                                    "--num-gpus", "0", "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                                    "--dashboard-port", str(self.dash_port), "--temp-dir", str(tmp),
                                    "--resources", json.dumps({"head_node": 1}), *_node_ports()], env)
        self._wait(lambda: self._jobs_api_up(), node, "the head's Jobs API")
        return node

    def start_worker(self, label: str = "worker", env: dict | None = None, own_temp_dir: bool = True) -> Node:
        """A second node; `own_temp_dir` as separate machines have (one machine's nodes must not share one)."""
        tmp = self.short / label[:8]
        tmp.mkdir(parents=True, exist_ok=True)
        node = self._start(label, ["--address", self.address, "--num-cpus", str(self.worker_cpus), "--num-gpus", "0",
                                   "--resources", json.dumps({f"{label}_node": 1}), *_node_ports(),
                                   *(["--temp-dir", str(tmp)] if own_temp_dir else [])], env)
        self._wait(lambda: self.alive_nodes() >= 2, node, "the worker node to join")
        return node

    def _jobs_api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def alive_nodes(self) -> int:
        try:
            with urllib.request.urlopen(f"{self.dashboard_url}/nodes?view=summary", timeout=3) as r:
                data = json.loads(r.read())
            summary = data["data"]["summary"]
            return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def _wait(self, cond, node: Node, what: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return
            if node.proc.poll() is not None:
                raise RuntimeError(f"{node.label} exited while waiting for {what}:\n{node.log.read_text()[-3000:]}")
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}:\n{node.log.read_text()[-3000:]}")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            try:
                os.kill(node.proc.pid, signal.SIGTERM)  # `ray start --block` stops its node's processes
                node.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                pass
            node.kill()  # whatever is left of the session
        shutil.rmtree(self.short, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
