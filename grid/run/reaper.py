"""The driver shuts the Ray processes it started, on every exit path.

Catchable exits (normal return, exceptions, Ctrl-C, SIGTERM, SIGHUP) go through `ray.shutdown()`
in the runner's `finally`; `exit_on_signals` turns SIGTERM/SIGHUP into an exception so that
`finally` runs. A SIGKILL cannot be caught, and Ray 2.60 then leaves two agent processes
(ray::DashboardAgent, ray::RuntimeEnvAgent) running for ever (issue 21). So a driver that starts
an embedded Ray also starts this reaper: a small process that records the driver's descendants
every half second and, once the driver is gone, ends those that are still there (SIGTERM, then
SIGKILL), matched by pid and start time so that a reused pid is never hit. Linux only (/proc);
elsewhere it does nothing.

    python -m grid.run.reaper DRIVER_PID
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Lazy here: threading (one code path)

POLL_S = 0.5


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # after "pid (comm) "
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every process below `root`."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
                starts[int(entry)] = st[1]
    out, todo = {}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out and c != os.getpid():
                out[c] = starts[c]
                todo.append(c)
    return out


def _alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] == start


def reap(driver: int, poll_s: float = POLL_S) -> int:
    """Watch `driver`; once it is gone, end what it had started. Returns how many were ended."""
    driver_start = (_stat(driver) or (0, 0))[1]
    seen: dict[int, int] = {}
    while _alive(driver, driver_start):
        seen.update(descendants(driver))
        seen = {p: s for p, s in seen.items() if _alive(p, s)}
        time.sleep(poll_s)
    time.sleep(poll_s)  # Ray's own fate-sharing ends most of them first
    left = {p: s for p, s in seen.items() if _alive(p, s)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, start in left.items():
            if _alive(pid, start):
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
        deadline = time.time() + 3
        while time.time() < deadline and any(_alive(p, s) for p, s in left.items()):
            time.sleep(0.1)
    return len(left)


def start_reaper() -> subprocess.Popen | None:
    """Start the reaper for this process (None where /proc is missing). It exits when we do."""
    if not Path("/proc/self/stat").exists():
        return None
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen([sys.executable, "-m", "grid.run.reaper", str(os.getpid())], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # a Ctrl-C to the driver's group must not stop it first


@contextlib.contextmanager
def exit_on_signals():
    """Within the block, SIGTERM and SIGHUP raise SystemExit (143 / 129) instead of killing outright."""
    import threading  # noqa: PLC0415

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for sig, h in old.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, h)


if __name__ == "__main__":
    sys.exit(0 if reap(int(sys.argv[1])) >= 0 else 1)
