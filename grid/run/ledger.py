"""The stored-trials ledger: a restored experiment never runs a trial the store already holds.

Why: Tune restores an experiment from its last state snapshot, which lags behind the store. A
trial that finished (and was stored) after the snapshot, or one that was stored before this run
and is still unfinished in Tune's state, would otherwise run again and replace its row, while
the summary counted it as skipped (issue 21: 7 of 9 crash cases).

How: before restoring, the driver starts a small named actor holding the trial_keys the store has
with a done status. At start, the trial function asks it which of its keys (a pack: its members)
are stored and returns at once for those, reporting `STORED_FLAG`; the driver writes nothing for
them. The actor belongs to the driver (it dies with it) and is named after the Tune experiment, so
a trial finds it through `tune.get_context().get_experiment_name()`; no actor, no check.
"""
from __future__ import annotations

from typing import Iterable

# Lazy here: ray (heavy: never at import time on the driver)

NAMESPACE = "lingrid"
PREFIX = "lingrid-ledger:"
STORED_FLAG = "already_stored"  # in a row payload: the store had this trial; nothing to write


def ledger_name(experiment: str) -> str:
    return PREFIX + experiment


class _Ledger:
    def __init__(self, keys: list[str]):
        self._keys = set(keys)

    def stored(self, keys: list[str]) -> list[str]:
        return [k for k in keys if k in self._keys]


def start_ledger(experiment: str, stored_keys: Iterable[str]):
    """The actor for `experiment` (replacing one a dead driver of the same experiment left)."""
    import ray  # noqa: PLC0415

    name = ledger_name(experiment)
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    except ValueError:
        pass
    actor = ray.remote(_Ledger).options(name=name, namespace=NAMESPACE, num_cpus=0, max_restarts=0)
    handle = actor.remote(sorted(stored_keys))
    ray.get(handle.stored.remote([]))  # up before any trial asks
    return handle


def stop_ledger(handle) -> None:
    if handle is None:
        return
    try:
        import ray  # noqa: PLC0415

        ray.kill(handle)
    except Exception:  # noqa: BLE001 - it dies with the driver anyway
        pass


def stored_keys(keys: list[str]) -> set[str]:
    """Inside a trial: which of `keys` the driver's store already holds (empty when no ledger runs)."""
    try:
        import ray  # noqa: PLC0415
        from ray import tune  # noqa: PLC0415

        handle = ray.get_actor(ledger_name(tune.get_context().get_experiment_name()), namespace=NAMESPACE)
    except Exception:  # noqa: BLE001 - no ledger (a fresh experiment): nothing is stored
        return set()
    return set(ray.get(handle.stored.remote(list(keys)), timeout=120))


__all__ = ["STORED_FLAG", "ledger_name", "start_ledger", "stop_ledger", "stored_keys"]
