"""Data-parallel LM trials: the Tune trial is a thin driver that launches a Ray Train V2 TorchTrainer.

This is the pattern of the Ray docs for multi-GPU trials inside Tune (spec/infra.md §1.11):

* The Tune trial itself holds only a CPU (its TrialSpec asks for gpu=0); the k GPUs are reserved
  by the Train worker group (`ScalingConfig(num_workers=k, use_gpu=True)`), gang-scheduled.
  A Tune trial that reserved the GPUs itself would leave none for its own workers, so
  `grid.lm.prepare_grid` puts k into `config["ddp"]` and limits concurrency to GPUs // k
  (`max_concurrent_trials`).
* Every rank runs the trial's training process (`process`, "module:function"; for LM trials
  `grid.lm.trial.train_lm`, the same recipe as a single-process trial) on its
  slice of each global batch (`TokenShards.batch(step, batch // k, seq_len, rank, k)`), with
  gradients all-reduced once per optimizer step (DDP, nccl on GPU, gloo on CPU). The global
  batch, the learning-rate schedule and the losses are those of the single-process run.
* Rank 0 reports curve points and checkpoints through `ray.train.report`; `TuneReportCallback`
  forwards the metrics to the Tune trial (the driver's StoreCallback sees them as usual).
* Resume: the Train run lives in the Tune trial's directory (`<trial dir>/ddp`), so a Tune retry
  or a restored experiment re-launches it under the same name and Ray Train restores its latest
  checkpoint. The last checkpoint of a finished run holds `final.json` (the final metrics).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from grid.run.context import import_string

# Lazy here: ray, torch (heavy: never at import time on the driver)

FINAL_FILE = "final.json"  # in the last checkpoint of a finished data-parallel run: rank 0's final metrics


class _TrainReporter:
    """`report(metrics, checkpoint_dir)` for one rank: rank 0 carries metrics and checkpoints; every rank
    calls ray.train.report at the same points (it is a collective in Train V2)."""

    def __init__(self, rank: int):
        self.rank = rank

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        import ray.train  # noqa: PLC0415

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if (checkpoint_dir and self.rank == 0) else None
        ray.train.report(dict(metrics) if self.rank == 0 else {}, checkpoint=ckpt)


def _worker(loop_config: dict[str, Any]) -> None:
    """Train V2 worker function: one rank of the data-parallel trial."""
    config, process = loop_config["config"], import_string(loop_config["process"])
    import ray.train  # noqa: PLC0415
    import torch  # noqa: PLC0415

    tctx = ray.train.get_context()
    rank, world = tctx.get_world_rank(), tctx.get_world_size()
    if (config.get("ddp") or {}).get("use_gpu", True) and torch.cuda.is_available():
        import ray.train.torch  # noqa: PLC0415

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    restored = ray.train.get_checkpoint()
    with (restored.as_directory() if restored is not None else contextlib.nullcontext(None)) as rdir:
        out = process(config, _TrainReporter(rank), restored_dir=rdir, rank=rank, world=world, device=device)
    tmp = tempfile.mkdtemp(prefix="lingrid-final-")
    try:
        if rank == 0:
            (Path(tmp) / FINAL_FILE).write_text(json.dumps(out))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _in_tune() -> bool:
    try:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return False
    return _in_tune_session()


def run_ddp(config: dict[str, Any], process: str, ctx: Any = None) -> dict[str, Any]:
    """Run one trial data-parallel on `config["ddp"]["workers"]` Train workers, each rank calling `process`
    ("module:function": fn(config, reporter, restored_dir=, rank=, world=, device=) -> final metrics; it
    returns the stored final metrics when `restored_dir` holds FINAL_FILE); returns rank 0's final metrics.

    Inside a Tune trial the metrics are forwarded with TuneReportCallback and the Train run is stored in
    the trial directory; outside Tune (tests, scripts) in `config["ddp_storage"]` (default: a temp dir).
    """
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchConfig, TorchTrainer  # noqa: PLC0415

    ddp = dict(config.get("ddp") or {})
    workers = int(ddp.get("workers", 1))
    use_gpu = bool(ddp.get("use_gpu", True))
    per_worker = {"CPU": float(ddp.get("cpus_per_worker", 1))}
    if use_gpu:
        per_worker["GPU"] = 1.0
    callbacks = []
    if _in_tune():
        from ray import tune  # noqa: PLC0415
        from ray.tune.integration.ray_train import TuneReportCallback  # noqa: PLC0415

        storage, name = tune.get_context().get_trial_dir(), "ddp"
        callbacks.append(TuneReportCallback())
    else:
        storage = config.get("ddp_storage") or tempfile.mkdtemp(prefix="lingrid-ddp-")
        name = "ddp"
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": config, "process": process},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=str(Path(storage).resolve()), callbacks=callbacks,
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"the data-parallel run in {storage}/{name} ended without its final checkpoint")
    with result.checkpoint.as_directory() as d:
        final = Path(d) / FINAL_FILE
        if not final.is_file():
            raise RuntimeError(f"the last checkpoint of {storage}/{name} has no {FINAL_FILE}")
        return json.loads(final.read_text())


__all__ = ["FINAL_FILE", "run_ddp"]
