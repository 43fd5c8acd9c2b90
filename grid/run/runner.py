"""Run a list of trials on Ray Tune, publish every outcome to the results store, survive crashes.

What `run_trials` does, in order:

0. **Packs** (grid/run/pack.py) are trials that hold member trials: everything below applies per
   member (dedup, rows, summary counts); Tune sees the pack.
0. **Outputs first.** The store root and the Tune storage must be writable directories (made
   when missing) before anything runs; temp files that killed writers left in the store are removed.
1. **Dedup against the store.** A trial whose `trial_key` already has a row with a status in
   `skip_statuses` (default: only "ok") anywhere in the store (any suite/grid folder: the same
   trial under a renamed grid is the same trial) is skipped, unless `force`. The store, not
   Tune's experiment state, is the source of truth for what is finished. Unreadable files are
   named (grid/results/scan.py); the trials they held are run again.
2. **Ray.** Reuses an already initialised Ray; otherwise starts an embedded local Ray
   (`num_cpus` / `num_gpus`, logical GPUs allowed, `RAY_AUTH_MODE=disabled` unless set) or
   connects to `address` (e.g. "auto" inside a Ray Job), and shuts down what it started on every
   exit it can catch (SIGTERM and SIGHUP included); for an embedded Ray a reaper process ends
   what a SIGKILLed driver leaves behind (grid/run/reaper.py).
3. **Experiment: restore or start.** Tune can only restore an experiment with the *same*
   `param_space` (the grid of trials); it cannot add or drop trials. So each experiment
   directory gets a manifest, `lingrid_manifest.json`, mapping trial_key -> hash of the full
   TrialSpec. With `resume=True`, an existing experiment `<experiment>` or `<experiment>__<hash>`
   is restored (`Tuner.restore(resume_unfinished=True, resume_errored=True)`) when it is
   restorable and *compatible*: every trial still to run is in it with an identical spec, and it
   holds no trial the caller no longer asks for. Otherwise a fresh experiment is started, named
   `<experiment>` if that name is free, else `<experiment>__<hash of the trial set>` (then
   `-2`, `-3`, ...). Re-running the same command after a crash therefore finds the same
   experiment again, and a grid with added trials runs only the missing ones in a new one.
   A restored experiment keeps its stored TuneConfig (e.g. max_concurrent) and Tune's own state;
   this run's callbacks and `max_failures` replace the pickled ones.
   A restored experiment may hold trials the store already has (finished after Tune's last state
   snapshot, or before this run started): the stored-trials ledger (grid/run/ledger.py) makes them
   return at once without running, so a resume never re-runs a stored trial.
   - trials that the restored experiment already counts as finished but that have no qualifying
     row in the store (deleted file, `force`, non-ok statuses with the default `skip_statuses`)
     are run once more in a fresh experiment right after the restored one.
4. **Tune.** `Tuner(with_resources(lingrid_trial, per-trial PlacementGroupFactory),
   param_space={"trial": grid_search([...one dict per trial...])})`, trial directories named by
   trial_key, `FailureConfig(max_failures)`, and the driver callbacks of grid/run/callbacks.py:
   `StoreCallback` (writes the row on completion, or a status="error" row after the last failed
   attempt), `ProgressCallback` (a live table on a terminal, sparse lines otherwise) and the
   progress.csv / TensorBoard loggers.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from grid.keys import content_hash
from grid.results.schema import STATUSES, check_name
from grid.run.ledger import start_ledger, stop_ledger
from grid.run.outputs import check_output_dir
from grid.run.pack import leaves, make_pack
from grid.run.reaper import exit_on_signals, start_reaper
from grid.run.resources import check_fits
from grid.run.spec import TrialSpec
from grid.run.trainable import lingrid_trial

# Lazy here: ray (heavy: never at import time on the driver); grid.run.callbacks (they import torch or Ray)

log = logging.getLogger(__name__)

MANIFEST = "lingrid_manifest.json"


@dataclasses.dataclass
class RunSummary:
    n_total: int                 # trials asked for
    n_skipped: int               # already in the store (dedup), not run
    n_ok: int                    # run now and stored with status "ok"
    n_failed: int                # run now and stored with status "error" (after all retries)
    experiment_path: str | None  # the Tune experiment directory used last (None when nothing ran)
    statuses: dict[str, str] = dataclasses.field(default_factory=dict)  # trial_key -> status stored by this run
    missing: list[str] = dataclasses.field(default_factory=list)         # asked for, not run to an outcome (interrupted)
    restored: bool = False                                               # an existing experiment was restored

    @property
    def n_other(self) -> int:
        """Trials stored with diverged / nan / skipped."""
        return sum(1 for s in self.statuses.values() if s not in ("ok", "error"))


# ----------------------------------------------------------------- Tune glue
# module-level (not lambdas) so they pickle by reference into tuner.pkl

def trial_dirname(trial) -> str:
    return trial.config["trial"]["trial_key"]


def trial_name(trial) -> str:
    return trial.config["trial"]["trial_key"]


def trial_pgf(config: dict[str, Any]):
    from ray.tune import PlacementGroupFactory

    spec = TrialSpec.from_json(config["trial"]["spec"])
    return PlacementGroupFactory([spec.resources.bundle()])


def _spec_hash(spec: TrialSpec) -> str:
    return content_hash(spec.model_dump(mode="json"))


def _param_space(todo: Sequence[TrialSpec]) -> dict[str, Any]:
    from ray import tune

    return {"trial": tune.grid_search([{"trial_key": t.trial_key, "spec": t.to_json()} for t in todo])}


def _trainable():
    from ray import tune

    return tune.with_resources(lingrid_trial, resources=trial_pgf)


# ------------------------------------------------------- experiment selection

def _read_manifest(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads((path / MANIFEST).read_text())
        return dict(data["trials"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_manifest(path: Path, base: str, todo: Sequence[TrialSpec]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    data = {"experiment": base, "trials": {t.trial_key: _spec_hash(t) for t in todo}}
    tmp = path / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path / MANIFEST)


def _candidates(storage_dir: Path, base: str) -> list[Path]:
    if not storage_dir.is_dir():
        return []
    out = [p for p in storage_dir.iterdir() if p.is_dir() and (p.name == base or p.name.startswith(base + "__"))]
    return sorted(out, key=lambda p: (p / MANIFEST).stat().st_mtime if (p / MANIFEST).exists() else 0.0, reverse=True)


def find_restorable(storage_dir: Path, base: str, todo: Sequence[TrialSpec], requested: dict[str, str]) -> Path | None:
    """The newest experiment that can be restored and covers exactly a compatible trial set."""
    from ray.tune import Tuner

    need = {t.trial_key: _spec_hash(t) for t in todo}
    for path in _candidates(storage_dir, base):
        manifest = _read_manifest(path)
        if manifest is None:
            continue
        covers = all(manifest.get(k) == h for k, h in need.items())
        no_strangers = all(requested.get(k) == h for k, h in manifest.items())
        if covers and no_strangers and Tuner.can_restore(str(path)):
            return path
    return None


def fresh_name(storage_dir: Path, base: str, todo: Sequence[TrialSpec]) -> str:
    if not (storage_dir / base).exists():
        return base
    name = f"{base}__{content_hash(sorted(_spec_hash(t) for t in todo), length=8)}"
    if not (storage_dir / name).exists():
        return name
    i = 2
    while (storage_dir / f"{name}-{i}").exists():
        i += 1
    return f"{name}-{i}"


# --------------------------------------------------------------------- main

def _dedupe_input(trials: Iterable[TrialSpec]) -> list[TrialSpec]:
    seen: dict[str, TrialSpec] = {}
    for t in trials:
        if not isinstance(t, TrialSpec):
            raise TypeError(f"run_trials takes TrialSpec objects, got {type(t).__name__}")
        prev = seen.get(t.trial_key)
        if prev is None:
            seen[t.trial_key] = t
        elif _spec_hash(prev) != _spec_hash(t):
            raise ValueError(f"trial_key {t.trial_key!r} appears twice with different specs "
                             f"({prev.suite}/{prev.grid} vs {t.suite}/{t.grid}); trial keys must be unique in one run")
    owner: dict[str, str] = {}
    for t in seen.values():
        for leaf in leaves(t):
            if leaf.trial_key in owner:
                raise ValueError(f"trial {leaf.trial_key!r} is in more than one pack or also on its own "
                                 f"({owner[leaf.trial_key]} and {t.trial_key}); each trial may run once")
            owner[leaf.trial_key] = t.trial_key
    return list(seen.values())


def _not_done(t: TrialSpec, done: set[str]) -> TrialSpec | None:
    """What of `t` still has to run: None, `t`, or for a pack a smaller pack of its unfinished members."""
    if not t.members:
        return None if t.trial_key in done else t
    left = [m for m in t.members if m.trial_key not in done]
    if not left:
        return None
    return t if len(left) == len(t.members) else make_pack(left, resources=t.resources,
                                                             retries=int(t.config.get("retries", 0)),
                                                             group=t.config.get("group"))


def _init_ray(address: str | None, num_cpus: int | None, num_gpus: int | None, ray_init_kwargs: dict[str, Any] | None) -> bool:
    """Start or connect to Ray unless it is already up; True when this call started it."""
    import ray

    if ray.is_initialized():
        if address is not None or num_cpus is not None or num_gpus is not None:
            log.info("lingrid: Ray is already initialised; ignoring address/num_cpus/num_gpus")
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    kwargs.update(ray_init_kwargs or {})
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    else:
        kwargs.pop("include_dashboard", None)
        ray.init(address=address, **kwargs)
    return True


def _set_restored_run_config(tuner, callbacks: list, max_failures: int) -> None:
    """A restored Tuner reuses the RunConfig pickled in tuner.pkl (old callback objects).

    Put this run's callbacks (and retry policy) in; needs the Tuner's local RunConfig object.
    """
    from ray.tune import FailureConfig

    local = getattr(tuner, "_local_tuner", None)
    if local is None or not hasattr(local, "get_run_config"):
        raise RuntimeError("cannot attach lingrid callbacks to the restored Tuner (Ray client mode is not "
                           "supported: run the driver on the cluster, e.g. with `ray job submit`)")
    rc = local.get_run_config()
    rc.callbacks = callbacks
    fc = rc.failure_config or FailureConfig()
    rc.failure_config = dataclasses.replace(fc, max_failures=max_failures) if dataclasses.is_dataclass(fc) else FailureConfig(max_failures=max_failures)


def _fit(*, todo: list[TrialSpec], requested: dict[str, str], store, base: str, storage_dir: Path,
         resume: bool, max_failures: int, max_concurrent: int | None, progress: bool, n_skipped: int,
         stored: set[str], allow_restore: bool = True):
    """One Tune run (restored or fresh). Returns (experiment_path, store_callback, result_grid, restored)."""
    from ray import tune

    from grid.run.callbacks import ProgressCallback, StoreCallback, artefact_callbacks

    path = find_restorable(storage_dir, base, todo, requested) if (resume and allow_restore) else None
    restored = path is not None
    name = path.name if restored else fresh_name(storage_dir, base, todo)
    n_exp = len(_read_manifest(path) or {}) if restored else len(todo)
    store_cb = StoreCallback(store, experiment=name)
    packed = not restored and any(t.members for t in todo)  # a restored experiment's packs: counted as trials
    progress_cb = ProgressCallback(n_exp, experiment=name, n_skipped=n_skipped, enabled=progress,
                                   n_runs=sum(len(leaves(t)) for t in todo) if packed else None,
                                   specs=None if restored else todo)
    callbacks = [store_cb, progress_cb, *artefact_callbacks(None if restored else todo)]
    ledger = None
    if restored:
        if progress:
            print(f"[{name}] restoring experiment {path} (resume unfinished and errored trials)", file=sys.stderr, flush=True)

        ledger = start_ledger(name, stored)  # its trials that the store has return without running
        tuner = tune.Tuner.restore(str(path), _trainable(), resume_unfinished=True, resume_errored=True)
        _set_restored_run_config(tuner, callbacks, max_failures)
    else:
        path = storage_dir / name
        _write_manifest(path, base, todo)
        if progress:
            print(f"[{name}] starting {len(todo)} trial(s) in {path}", file=sys.stderr, flush=True)
        tuner = tune.Tuner(
            _trainable(),
            param_space=_param_space(todo),
            tune_config=tune.TuneConfig(
                max_concurrent_trials=max_concurrent,
                # keep worker processes between trials: a fresh process per MAD-size trial re-imports
                # torch/fla and re-autotunes fla's Triton kernels, which costs more than the run itself
                reuse_actors=True,
                trial_dirname_creator=trial_dirname,
                trial_name_creator=trial_name,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(storage_dir),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=0,
                callbacks=callbacks,
            ),
        )
    try:
        grid = tuner.fit()
    finally:
        progress_cb.close()

        stop_ledger(ledger)
    return path, store_cb, grid, restored


def _stop_reaper(reaper) -> None:
    if reaper is not None:  # nothing left to reap: Ray is down
        reaper.terminate()
        reaper.wait()


def run_trials(
    trials: list[TrialSpec],
    *,
    store,
    experiment: str,
    storage_dir: str | os.PathLike[str],
    num_gpus: int | None = None,
    num_cpus: int | None = None,
    address: str | None = None,
    max_failures: int = 1,
    force: bool = False,
    resume: bool = True,
    max_concurrent: int | None = None,
    progress: bool = True,
    skip_statuses: Sequence[str] = ("ok",),
    ray_init_kwargs: dict[str, Any] | None = None,
) -> RunSummary:
    """Run `trials` on Ray Tune and store one row per trial; see the module docstring for the semantics.

    max_failures: retries per trial after the first failed attempt (Tune FailureConfig; -1 = forever).
    skip_statuses: stored statuses that count as done for dedup (e.g. ("ok", "diverged", "nan")).
    """
    check_name("experiment", experiment)
    bad = set(skip_statuses) - set(STATUSES)
    if bad:
        raise ValueError(f"skip_statuses {sorted(bad)} not in {list(STATUSES)}")
    if not isinstance(max_failures, int) or max_failures < -1:
        raise ValueError(f"max_failures must be an int >= -1, got {max_failures!r}")
    if max_concurrent is not None and (not isinstance(max_concurrent, int) or max_concurrent < 1):
        raise ValueError(f"max_concurrent must be an int >= 1 or None, got {max_concurrent!r}")
    trials = _dedupe_input(trials)

    # 0. every output path before any trial starts
    check_output_dir("results store", store.root)
    storage_dir = check_output_dir("Tune storage (--ray-tmp-path)", Path(storage_dir).resolve())
    store.clean_temps()

    # 1. dedup against the whole store by trial_key (per member for packs)
    stored = store.trial_keys(status=list(skip_statuses))
    done = set() if force else stored
    todo: list[TrialSpec] = []
    for t in trials:
        left = _not_done(t, done)
        if left is not None:
            todo.append(left)
    n_total = sum(len(leaves(t)) for t in trials)
    todo_keys = [leaf.trial_key for t in todo for leaf in leaves(t)]
    n_skipped = n_total - len(todo_keys)
    # what an experiment to restore may hold: the trials asked for, and the smaller packs made just now
    requested = {t.trial_key: _spec_hash(t) for t in [*trials, *todo]}
    if progress:
        what = "/".join(sorted(set(skip_statuses)))
        packed = f" in {len(todo)} pack(s)" if any(t.members for t in todo) else ""
        print(f"[{experiment}] {n_total} trial(s): {n_skipped} already {what} in {store.root} (skipped), "
              f"{len(todo_keys)} to run{packed}", file=sys.stderr, flush=True)
    if not todo:
        return RunSummary(n_total, n_skipped, 0, 0, None)

    # 2. Ray
    with exit_on_signals():
        return _run_on_ray(trials=trials, todo=todo, todo_keys=todo_keys, requested=requested, store=store,
                           experiment=experiment, storage_dir=storage_dir, num_gpus=num_gpus, num_cpus=num_cpus,
                           address=address, max_failures=max_failures, resume=resume,
                           max_concurrent=max_concurrent, progress=progress, ray_init_kwargs=ray_init_kwargs,
                           n_total=n_total, n_skipped=n_skipped, stored=set() if force else stored)


def _run_on_ray(*, trials, todo, todo_keys, requested, store, experiment, storage_dir, num_gpus, num_cpus, address,
                max_failures, resume, max_concurrent, progress, ray_init_kwargs, n_total, n_skipped,
                stored) -> RunSummary:
    import ray

    # before Ray starts, so that a driver killed even during ray.init leaves nothing behind
    reaper = start_reaper() if address is None and not ray.is_initialized() else None
    try:
        started = _init_ray(address, num_cpus, num_gpus, ray_init_kwargs)
    except BaseException:
        _stop_reaper(reaper)
        raise
    try:
        import ray

        cluster = ray.cluster_resources()
        for res in {t.resources for t in todo}:
            check_fits(res, cluster)
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        # legacy reporter: verbose=0 is really silent (the new engine still prints tables); our line is the UI
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

        # 3./4. restore or start, then a fresh run for what a restored experiment did not cover
        statuses: dict[str, str] = {}
        path, cb, grid, restored = _fit(todo=todo, requested=requested, store=store, base=experiment,
                                        storage_dir=storage_dir, resume=resume, max_failures=max_failures,
                                        max_concurrent=max_concurrent, progress=progress, n_skipped=n_skipped,
                                        stored=stored)
        statuses.update(cb.written)
        if restored:
            finished_in_tune = set()
            for r in grid:
                key = (r.config or {}).get("trial", {}).get("trial_key")
                if key and r.error is None and (r.metrics or {}).get("done"):
                    finished_in_tune.add(key)
            again = [t for t in todo if t.trial_key in finished_in_tune
                     and any(leaf.trial_key not in statuses for leaf in leaves(t))]
            if again:
                if progress:
                    print(f"[{experiment}] {len(again)} trial(s) are finished in the restored experiment but have "
                          f"no row to skip them by: running them again", file=sys.stderr, flush=True)
                path, cb, grid, _ = _fit(todo=again, requested=requested, store=store, base=experiment,
                                         storage_dir=storage_dir, resume=False, max_failures=max_failures,
                                         max_concurrent=max_concurrent, progress=progress, n_skipped=n_skipped,
                                         stored=stored, allow_restore=False)
                statuses.update(cb.written)
    finally:
        if started:
            import ray

            ray.shutdown()
        _stop_reaper(reaper)

    mine = {k: statuses[k] for k in todo_keys if k in statuses}
    missing = [k for k in todo_keys if k not in mine]
    summary = RunSummary(
        n_total=n_total,
        n_skipped=n_skipped,
        n_ok=sum(1 for s in mine.values() if s == "ok"),
        n_failed=sum(1 for s in mine.values() if s == "error"),
        experiment_path=str(path),
        statuses=mine,
        missing=missing,
        restored=restored,
    )
    if progress:
        print(f"[{experiment}] finished: {summary.n_ok} ok, {summary.n_failed} failed, {summary.n_other} other, "
              f"{summary.n_skipped} skipped, {len(missing)} not run; experiment {path}", file=sys.stderr, flush=True)
    return summary
