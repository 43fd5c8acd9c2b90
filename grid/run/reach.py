"""Before a grid starts on a Ray cluster: every node can reach the paths the grid writes and reads.

Trials on any node write checkpoints into the Tune storage, the driver writes the results store,
and trials may read a shared data dir: on a multi-node cluster these must be storage that every
node mounts at the same path. `unreachable(paths)` proves it: the driver writes a token file into
each path, and one tiny task pinned to each alive node reads every token back and writes a file
of its own. A path some node cannot see is named with the node, before any trial starts.

`shared_temp_dir()` catches the one-machine cluster whose nodes share a temp dir (two `ray start`
without their own --temp-dir): there, Ray's per-node cleanup deletes a job's working dir under its
running driver (issue 21: 'No module named ...', then FileNotFoundError in Tune).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

# Lazy here: ray (heavy: never at import time on the driver); socket (one code path)

TOKEN_PREFIX = ".lingrid-reach-"


def _alive_nodes() -> list[dict]:
    import ray  # noqa: PLC0415

    return [n for n in ray.nodes() if n.get("Alive")]


def shared_temp_dir(nodes: list[dict] | None = None) -> str | None:
    """A message when two alive nodes of one host share a Ray session dir, else None."""
    nodes = _alive_nodes() if nodes is None else nodes
    seen: dict[tuple[str, str], list[str]] = {}
    for n in nodes:
        sock = str(n.get("ObjectStoreSocketName") or "")
        session = sock.split("/sockets/")[0] if "/sockets/" in sock else ""
        if session:
            seen.setdefault((str(n.get("NodeManagerAddress")), session), []).append(str(n.get("NodeID", "?"))[:8])
    for (ip, session), ids in seen.items():
        if len(ids) > 1:
            return (f"Ray nodes {', '.join(ids)} on {ip} share the temp dir {Path(session).parent}: Ray then deletes a "
                    "job's working dir under its running driver; start each node of one machine with its own "
                    "`ray start --temp-dir DIR`")
    return None


def _probe(items: list[tuple[str, str, str]]) -> list[str]:
    """On one node: each (flag, path, token) must be readable, and the path writable."""
    import socket  # noqa: PLC0415

    import ray  # noqa: PLC0415

    where = f"node {ray.get_runtime_context().get_node_id()[:8]} ({socket.gethostname()})"
    problems = []
    for flag, path, token in items:
        tok = Path(path) / f"{TOKEN_PREFIX}{token}"
        try:
            if tok.read_text() != token:
                raise OSError("the driver's token file has other content")
        except OSError as exc:
            problems.append(f"{flag} {path} is not the same directory on {where} as on the driver "
                            f"({exc.strerror or exc})")
            continue
        mine = Path(path) / f"{TOKEN_PREFIX}{token}-{uuid.uuid4().hex[:6]}"
        try:
            mine.write_text("x")
            mine.unlink()
        except OSError as exc:
            problems.append(f"{flag} {path} is not writable on {where} ({exc.strerror or exc})")
    return problems


def unreachable(paths: dict[str, str | os.PathLike[str]], timeout_s: float = 180.0) -> list[str]:
    """Problems (one line each) with `paths` ({flag: directory}) as seen from every alive node; [] = fine."""
    import ray  # noqa: PLC0415
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    token = uuid.uuid4().hex
    items, written = [], []
    for flag, path in paths.items():
        p = Path(path).expanduser().resolve()
        tok = p / f"{TOKEN_PREFIX}{token}"
        tok.write_text(token)
        written.append(tok)
        items.append((flag, str(p), token))
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(items)
                for n in _alive_nodes()]
        problems: list[str] = []
        for r in ray.get(refs, timeout=timeout_s):
            problems += r
        return sorted(set(problems))
    finally:
        for tok in written:
            try:
                tok.unlink()
            except OSError:
                pass


def cluster_problems(paths: dict[str, str | os.PathLike[str]]) -> str | None:
    """One line naming what keeps the grid from running on this cluster, or None."""
    shared = shared_temp_dir()
    if shared:
        return shared
    problems = unreachable(paths)
    if problems:
        return ("every node must reach these paths (storage mounted at the same path on every node): "
                + "; ".join(problems))
    return None


__all__ = ["cluster_problems", "shared_temp_dir", "unreachable"]
