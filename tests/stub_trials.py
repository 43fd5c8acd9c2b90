"""Stub trial functions for the runner tests: no torch, no model, just the trial contract."""
from __future__ import annotations

import os
import time
from pathlib import Path


def ok_trial(config, ctx):
    """Reports a couple of steps, returns a metric; sleeps config.get('sleep_s', 0) in total."""
    steps = int(config.get("steps", 2))
    for i in range(steps):
        time.sleep(float(config.get("sleep_s", 0.0)) / max(steps, 1))
        ctx.report({"step": i, "loss": 1.0 / (i + 1)})
    return {"score": float(config.get("x", 0)) * 2.0, "n_steps": steps,
            "cvd": os.environ.get("CUDA_VISIBLE_DEVICES")}


def gpu_trial(config, ctx):
    """Holds its (logical) GPU for a while so that trials overlap, and returns what it saw."""
    time.sleep(float(config.get("sleep_s", 1.0)))
    return {"cvd": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "worker_pid": os.getpid()}


def flaky_trial(config, ctx):
    """Raises on the first attempt (marker file absent), succeeds on the retry, resuming from its checkpoint."""
    marker = Path(config["marker"])
    restored = ctx.checkpoint_dir()
    if not marker.exists():
        marker.write_text("failed once")
        ckpt = Path(config["ckpt_dir"])
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "state.txt").write_text("step=1")
        ctx.report({"step": 1}, checkpoint_dir=str(ckpt))
        raise RuntimeError("flaky: first attempt fails on purpose")
    state = (Path(restored) / "state.txt").read_text() if restored else None
    return {"resumed_from": state or "", "score": 1.0}


def always_fails(config, ctx):
    raise ValueError("always_fails: this trial never works")


def diverging_trial(config, ctx):
    return {"status": "diverged", "loss": float("nan")}


def thread_trial(config, ctx):
    """Records where and when it ran (process, thread, entry/exit time) around a sleep: for packed-trial tests."""
    import threading  # noqa: PLC0415

    entered = time.time()
    time.sleep(float(config.get("sleep_s", 1.0)))
    return {"entered": entered, "left": time.time(), "worker_pid": os.getpid(),
            "thread_name": threading.current_thread().name, "thread_id": str(threading.get_ident())}


def counted_trial(config, ctx):
    """Appends a line to config['log'] per execution (how often a packed member really ran)."""
    with open(config["log"], "a") as f:
        f.write("ran\n")
    return {"score": 1.0}


def dies_after_row(config, ctx):
    """Kills its whole process once the row of trial config['wait_key'] is in the store under config['store']
    (so that row was handed over while the pack still ran); with config['marker'], only the first time."""
    with open(config["log"], "a") as f:
        f.write("ran\n")
    marker = Path(config["marker"]) if config.get("marker") else None
    if marker is not None and marker.exists():
        return {"score": 2.0}
    deadline = time.time() + 120
    while time.time() < deadline and not any(Path(config["store"]).rglob(f"{config['wait_key']}.parquet")):
        time.sleep(0.1)
    if marker is not None:
        marker.write_text("died once")
    os._exit(3)


def learning_trial(config, ctx):
    """Reports a falling train_loss every step and a val_loss every other step (the progress block's sources)."""
    steps = int(config.get("steps", 4))
    for i in range(1, steps + 1):
        time.sleep(float(config.get("sleep_s", 0.0)) / steps)
        metrics = {"step": i, "train_loss": 4.0 / i}
        if i % 2 == 0:
            metrics["val_loss"] = 4.5 / i
        ctx.report(metrics)
    return {"val_loss": 4.5 / steps}


def group_trial(configs, contexts, on_done):
    """A group function (grid/run/pack.py): hands member 0's result over at once, returns the rest."""
    results = []
    for i, (config, ctx) in enumerate(zip(configs, contexts)):
        ctx.report({"step": 1, "loss": 0.5})
        results.append({"score": float(config.get("x", 0)) * 3.0, "position": i})
        if i == 0:
            on_done(0, results[0])
    return results


def group_fails_after_first(configs, contexts, on_done):
    """A group function that finishes member 0, then raises: the others must run in threads."""
    on_done(0, {"score": -1.0})
    raise RuntimeError("group_fails_after_first: cannot batch these")

def slow_flaky_trial(config, ctx):
    """Like flaky_trial, but each attempt takes config['sleep_s'] first: the row's wall_s must sum both."""
    time.sleep(float(config["sleep_s"]))
    return flaky_trial(config, ctx)


def config_error_trial(config, ctx):
    """A deterministic build error (the model code refuses the config): must not be retried."""
    from grid.models.errors import ConfigError  # noqa: PLC0415

    with open(config["log"], "a") as f:
        f.write("ran\n")
    raise ConfigError("mixer_kwargs.num_heads", "two", ["an int"])


def logged_trial(config, ctx):
    """Logs each execution (and whether the store already had this trial's row: a re-run) and sleeps."""
    store = Path(config["store"])
    rerun = any(store.glob(f"suite=*/grid=*/{ctx.trial_key}.parquet"))
    with open(config["log"], "a") as f:
        f.write(f"{ctx.trial_key} {os.getpid()} {'RERUN' if rerun else 'run'}\n")
    steps = int(config.get("steps", 2))
    for i in range(steps):
        time.sleep(float(config.get("sleep_s", 1.0)) / steps)
        ckpt = Path(config["ckpt_root"]) / f"{ctx.trial_key}-{os.getpid()}-{i}"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "step.txt").write_text(str(i))
        ctx.report({"step": i}, checkpoint_dir=str(ckpt))
    return {"score": 1.0}
