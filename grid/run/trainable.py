"""The one Ray Tune function trainable: runs a trial's `module:function` inside the Ray worker.

The trial function's contract (TrialContext, statuses, retries, wall time over segments) lives in
grid/run/context.py; packs of trials in grid/run/pack.py. This module is the Tune side: it unpacks the
TrialSpec, sets the trial's environment, reports provenance first and the row payload last.

A restored experiment may hold trials the store already has (grid/run/ledger.py): those return at
once without running, and the driver writes nothing for them.

Only `ray.tune.*` APIs are used here (ray.train.report inside Tune is an error on Ray >= 2.52).
Model code (torch, fla, triton) is imported by the trial function, on the worker, never here.
"""
from __future__ import annotations

# Lazy here: ray (imported inside the functions that run on a Ray worker; the store and CLI import this module too).

import contextlib
import json
import os
import tempfile
from typing import Any

from grid.env import provenance
from grid.paths import use_host_kernel_cache
from grid.run.context import ProgressTracker, Segments, TrialContext, final_report, finish_row, utcnow_iso
from grid.run.ledger import STORED_FLAG, stored_keys
from grid.run.pack import checkpoint_rows, pack_status, restored_rows, run_members
from grid.run.spec import TrialSpec

# keys of the dicts reported to Tune that carry lingrid's own payloads
START_KEY = "__start__"
FINAL_KEY = "__final__"
PROV_KEY = "__prov__"    # JSON: provenance + gpu_index + started_at, reported once at trial start
ROW_KEY = "__row__"      # JSON: the store row payload, reported once at the end
MEMBER_ROW_KEY = "__member_row__"  # JSON: one packed member's row payload, reported as it finishes
TRIAL_KEY = "trial"      # Tune param_space: {"trial": grid_search([{"trial_key": k, "spec": <TrialSpec JSON>}, ...])}
SPEC_KEY = "spec"


def _json(obj: Any) -> str:
    return json.dumps(obj, default=str, allow_nan=True)


@contextlib.contextmanager
def trial_environment(env: dict[str, str]):
    """Set a trial's environment (TrialSpec.env) in this worker process for the trial, then restore it:
    Ray reuses worker processes between trials (reuse_actors)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
def _restored_dir():
    """The checkpoint this attempt resumes from, as a local directory (None on a fresh start)."""
    from ray import tune  # noqa: PLC0415

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    fs_type = getattr(getattr(ckpt, "filesystem", None), "type_name", "local")
    return ckpt.path if fs_type == "local" else ckpt.to_directory()


def lingrid_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: config = {"trial": {"trial_key": ..., "spec": <TrialSpec JSON>}}."""
    use_host_kernel_cache()  # compiled kernels and tuned choices: once per host, shared by its workers
    spec = TrialSpec.from_json(config[TRIAL_KEY][SPEC_KEY])
    with trial_environment(spec.env):
        _run_trial(spec)


def _run_trial(spec) -> None:
    from ray import tune  # noqa: PLC0415

    started_at = utcnow_iso()
    stored = stored_keys([m.trial_key for m in spec.members] or [spec.trial_key])
    if stored and not spec.members:  # a restored experiment's trial that the store already has
        tune.report({FINAL_KEY: True, "status": "stored", ROW_KEY: _json({STORED_FLAG: True})})
        return
    gpu_index = os.environ.get("CUDA_VISIBLE_DEVICES") if spec.resources.gpu > 0 else None
    prov = dict(provenance())
    prov.pop("cuda_visible_devices", None)
    prov["env_profile"] = os.environ.get("LINGRID_ENV_PROFILE")
    restored = _restored_dir()
    segments = Segments.restore(restored, started_at)
    head = {**prov, "gpu_index": gpu_index, "started_at": segments.first_started_at, "attempt_started_at": started_at,
            "prior_wall_s": segments.prior_s, "segments": segments.n}
    if spec.members:  # how the runs execute (grid/run/pack.py); a member's own row may say 'pack' after all
        head.update(exec_path="batched" if spec.config.get("group") else "pack", exec_members=len(spec.members))
    else:
        head.update(exec_path="solo", exec_members=1)
    # reported first so an attempt that crashes still leaves provenance and gpu_index for its error row
    tune.report({START_KEY: True, PROV_KEY: _json(head), **ProgressTracker(spec.work).block()})

    if spec.members:  # a pack: one thread per member, one row per member (grid/run/pack.py)
        done: dict[str, dict[str, Any]] = {}
        if restored is not None:  # a retried or restored pack: members that finished are not run again
            done = {k: r for k, r in restored_rows(restored).items() if r.get("status") != "error"}
        for key in stored - set(done):
            done[key] = {"trial_key": key, "status": "stored", STORED_FLAG: True}
        progress = {"block": ProgressTracker(spec.work).block()}

        def on_finished(row: dict[str, Any]) -> None:
            if row.get("status") != "error":  # an error gets another chance if the pack is retried
                done[row["trial_key"]] = row
            with tempfile.TemporaryDirectory() as d:
                checkpoint_rows(d, done)
                segments.save(d)
                tune.report({MEMBER_ROW_KEY: _json(row), **progress["block"]},
                            checkpoint=tune.Checkpoint.from_directory(d))

        def on_progress(tracker: ProgressTracker) -> None:
            progress["block"] = tracker.block()
            tune.report(dict(progress["block"]))

        rows = run_members(spec, head, on_finished=on_finished, done=done, on_progress=on_progress)
        tune.report({FINAL_KEY: True, "status": pack_status(rows), "wall_s": segments.wall_s(),
                     ROW_KEY: _json({"members": rows}), **progress["block"]})
        return
    ctx = TrialContext(spec, gpu_index, segments)
    row = finish_row(spec, ctx, head, segments)
    flat = final_report(row["metrics"])
    ctx.progress.update(row["metrics"])
    tune.report({**flat, FINAL_KEY: True, "status": row["status"], "wall_s": row["wall_s"], ROW_KEY: _json(row),
                 **ctx.progress.block()})


