"""The LM pretraining trial: `run_lm(config, ctx) -> dict`, run by the Ray runner on a worker.

`config` is `LMTrial.config` (model, resolved train block, recipe, data_hash, seed, env_profile, device
class: the hashed block of `trial_key`) plus the runtime block (gridspec.RUNTIME_FIELDS):
`data_dir` (absolute path of the prepared token shards), `data_local` + `data_spec` (on a cluster
without shared storage: prepare the shards in this node's cache, grid/data/cache.py), `ddp` ({"workers": k, "use_gpu": bool,
"cpus_per_worker": c} for a data-parallel trial, see grid/lm/ddp.py) and `ddp_storage`.

Recipe, on the one training core (grid.train.loop.train):
* next-token cross-entropy (+ the model's MoE aux loss, 0 without MoE); AdamW with the recipe's
  betas/eps/weight decay, no decay on norms, biases and embeddings unless
  `decay_norms_biases_embeddings`; linear warmup then cosine to `min_lr_ratio` x peak; gradient
  clipping; bf16 autocast on GPU (fp32 on CPU); gradient accumulation down to `micro_batch_size`.
* validation: token-weighted mean loss over the first `eval_batches` x batch_size windows of the
  val split, every `eval_every` steps and at the end.
* divergence guard: a non-finite loss, or one above `divergence_factor` x the running minimum after
  warmup, ends the trial with status "diverged" and `diverged_step`.
* throughput: `tokens_per_s` and `mfu` are steady-state, timed from step `throughput_from_step`
  (10% of the run, at most 20 steps; 0 for runs under 20 steps) to the end, without evaluation and
  checkpoint time; `tokens_per_s_all_steps` includes the first steps (kernel compile/autotune).
* checkpoints every `ckpt_every` steps (and at the end) go through `ctx.report(..., checkpoint_dir)`
  so that Tune retries and restored experiments resume from the last one; the curve points so far
  travel inside the checkpoint and are re-reported on resume (the curve is complete even after a
  driver crash).

Recall evaluations (the grid's `evals` block, grid/lm/evals): run on rank 0 after the last step of a
trial that ended ok, each score a column of the row; with `evals.at_checkpoints` also at every
checkpoint, added to that step's curve point (the last checkpoint's scores are the row's, computed
once). Their time is not training time.

Curve points are reported every `log_every` = max(1, eval_every // 10) steps, at evaluations and at
checkpoints as metrics named `curve/<column>` (step, tokens, train_loss, val_loss when evaluated,
lr, flops = cumulative training FLOPs); the driver's StoreCallback turns them into the curves
table and keeps them out of the results row. `train_loss` of a point is the mean step loss since
the previous point.
"""
from __future__ import annotations

import json
import math
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from grid.check.gate import gate_model
from grid.data import TokenShards
from grid.data.cache import ensure_local
from grid.env.profiles import load_profile
from grid.lm.ddp import FINAL_FILE, run_ddp
from grid.lm.evals.run import run_evals
from grid.lm.mfu import current_gpu_name, mfu
from grid.models import ModelConfig, build_model
from grid.models.accounting import account
from grid.models.compile import compile_model
from grid.results.schema import CURVE_PREFIX
from grid.run.context import PermanentError
from grid.train import DirCheckpointer, TrainTask, WarmupCosine, build_adamw, run_fields, train
from grid.train.checkpoint import FILE_NAME

SKIP_ENV_CHECK = "LINGRID_SKIP_ENV_CHECK"


class LMTrialError(RuntimeError):
    pass




# ------------------------------------------------------------------------------------------ helpers

def check_env(config: dict[str, Any]) -> None:
    """Fail fast when this worker does not match the grid's environment profile."""
    name = config.get("env_profile")
    if not name or os.environ.get(SKIP_ENV_CHECK):
        return

    load_profile(name).check_installed()  # ProfileError names every mismatch


def lm_loss(model, x, y):
    """Mean next-token cross-entropy over all positions (fp32 logits) plus the model's aux loss."""

    logits = model(x)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    aux = getattr(model, "module", model).aux_loss
    return loss + aux if not isinstance(aux, (int, float)) or aux != 0 else loss


def log_every(recipe: dict[str, Any]) -> int:
    return max(1, int(recipe["eval_every"]) // 10)


def throughput_warmup_steps(steps: int) -> int:
    """Steps left out of the steady-state tokens/s (and MFU): 10% of the run, at most 20, none for
    runs under 20 steps (too short to spare any)."""
    return min(20, steps // 10) if steps >= 20 else 0


def default_device():
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def reset_peak_memory(device) -> None:
    """Start this trial's peak-memory window (the runner reuses worker processes between trials)."""

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux >= 4.0: "5" resets the process's peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_gib(device) -> tuple[float, str]:
    """(GiB, kind): CUDA max allocated on GPU, else the process's peak resident set size since the reset."""

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20, "cpu_peak_rss"  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cpu_peak_rss_process"  # KiB on Linux


class NullReporter:
    """Stands in for ctx when run_lm is called without a runner."""

    def report(self, metrics, checkpoint_dir=None) -> None:
        pass


class _CurveCheckpointer:
    """The loop's checkpointer: saves the state (plus curve points and throughput counters) into a
    fresh directory and hands it to the reporter together with the curve point of that step."""

    def __init__(self, reporter, restored_dir: str | None, writer: bool, point_extras=None):
        self.reporter, self.restored_dir, self.writer = reporter, restored_dir, writer
        self.point_extras = point_extras  # step -> extra metrics of the checkpoint's curve point (the writer's)
        self.points: list[dict[str, Any]] = []
        self.staged: dict[str, Any] | None = None
        self.prior_train_s = 0.0
        self.seg_start = time.perf_counter()
        self.overhead_s = 0.0  # evaluation + checkpoint time of this segment (not training)
        self._saved: dict[str, Any] | None = None

    def train_s(self) -> float:
        return self.prior_train_s + time.perf_counter() - self.seg_start - self.overhead_s

    # ----------------------------------------------------------- checkpointer protocol
    def restore(self) -> dict[str, Any] | None:
        """Read the restored checkpoint once (curve points, train time); `load` hands its state to the loop."""

        self._saved = None
        if self.restored_dir and (Path(self.restored_dir) / FILE_NAME).is_file():
            state = torch.load(Path(self.restored_dir) / FILE_NAME, map_location="cpu", weights_only=True)
            extra = state.pop("lm", None) or {}
            self.points = [dict(p) for p in extra.get("curve", [])]
            self.prior_train_s = float(extra.get("train_s", 0.0))
            self._saved = state
        return self._saved

    def load(self):
        return self._saved

    def save(self, state: dict[str, Any]) -> None:
        t = time.perf_counter()
        if self.writer and self.point_extras is not None and self.staged is not None:
            self.staged.update(self.point_extras(int(self.staged["step"])))
        point = self._take()
        if not self.writer:  # a data-parallel rank other than 0: same report call, no files
            self.reporter.report(_curve_metrics(point))
        else:
            tmp = tempfile.mkdtemp(prefix="lingrid-ckpt-")
            try:
                DirCheckpointer(tmp).save({**state, "lm": {"curve": self.points, "train_s": self.train_s()}})
                self.reporter.report(_curve_metrics(point), checkpoint_dir=tmp)  # copied by the runner
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.overhead_s += time.perf_counter() - t

    # ----------------------------------------------------------------- curve points
    def stage(self, point: dict[str, Any]) -> None:
        self.staged = point

    def _take(self) -> dict[str, Any] | None:
        point, self.staged = self.staged, None
        if point is not None:
            self.points.append(point)
        return point

    def emit(self) -> None:
        point = self._take()
        if point is not None:
            self.reporter.report(_curve_metrics(point))

    def replay(self) -> None:
        """Re-report the points restored from a checkpoint (the driver keeps the last value per step)."""
        for p in self.points:
            self.reporter.report(_curve_metrics(p))


def _curve_metrics(point: dict[str, Any] | None) -> dict[str, Any]:
    return {} if point is None else {CURVE_PREFIX + k: v for k, v in point.items() if v is not None}


# ---------------------------------------------------------------------------------------- the trial

def run_lm(config: dict[str, Any], ctx: Any = None) -> dict[str, Any]:
    """Train one LM trial; returns the final metrics (always with `status`: ok or diverged)."""
    check_env(config)
    ddp = config.get("ddp") or {}
    if int(ddp.get("workers", 1)) > 1:
        return run_ddp(config, "grid.lm.trial:train_lm", ctx)
    reporter = ctx if ctx is not None else NullReporter()
    restored = ctx.checkpoint_dir() if ctx is not None else None
    return train_lm(config, reporter, restored_dir=restored)


class LMTask(TrainTask):
    """One LM training process for the loop (grid/train/task.py): its token-shard batches (this rank's rows),
    the LM loss (DDP: gradients all-reduced on a step's last micro-batch, the loss averaged over ranks), the
    warmup-cosine lr, validation loss on `eval_batches` windows, and the curve points it stages on every sync,
    evaluation and checkpoint (_CurveCheckpointer)."""

    def __init__(self, *, model, train_data, val_data, ckpt, schedule, seq, local, micro, accum, rank, world,
                 device, steps, eval_every, ckpt_every, max_windows, flops_per_token, warm):
        self.model, self.train_data, self.val_data, self.ckpt, self.schedule = model, train_data, val_data, ckpt, schedule
        self.seq, self.local, self.micro, self.accum, self.rank, self.world = seq, local, micro, accum, rank, world
        self.device, self.steps, self.eval_every, self.ckpt_every = device, steps, eval_every, ckpt_every
        self.max_windows, self.fpt, self.warm = max_windows, flops_per_token, warm
        self.calls = 0
        self.mark: dict[str, float] = {}  # train time at the end of the warm-up steps (steady throughput)

    def batch(self, step: int):
        return self.train_data.batch(step, self.local, self.seq, self.rank, self.world)

    def loss(self, m, x, y):
        if self.world > 1:  # all-reduce gradients only on the last micro-batch of a step
            m.require_backward_grad_sync = self.calls % self.accum == self.accum - 1
            self.calls += 1
        loss = lm_loss(m, x, y)
        if self.world > 1:  # every rank sees the global mean (same guard decisions); gradients stay local
            g = loss.detach().clone()
            dist.all_reduce(g)
            loss = loss + (g / self.world - loss.detach())
        return loss

    def lr(self, step: int) -> float:
        return self.schedule(step)

    def evaluate(self, step: int) -> dict[str, Any]:
        t = time.perf_counter()
        tot = torch.zeros(2, dtype=torch.float64, device=self.device)
        for x, y in self.val_data.eval_batches(self.seq, self.micro, self.max_windows, self.rank, self.world):
            x, y = x.to(self.device), y.to(self.device)
            logits = self.model(x)  # the plain module: no DDP collectives in evaluation
            tot[0] += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                      reduction="sum").double()
            tot[1] += y.numel()
        if self.world > 1:
            dist.all_reduce(tot)
        self.ckpt.overhead_s += time.perf_counter() - t
        n = float(tot[1].item())
        return {"val_loss": float(tot[0].item()) / n if n else float("nan"), "val_tokens": int(n)}

    def _is_eval(self, step: int) -> bool:
        return step % self.eval_every == 0 or step == self.steps

    def _is_ckpt(self, step: int) -> bool:
        return step % self.ckpt_every == 0 or step == self.steps

    def on_sync(self, rec: dict[str, Any]) -> None:
        s = rec["step"]
        tokens = int(rec["tokens_seen"]) * self.world
        self.ckpt.stage({"step": s, "tokens": tokens, "train_loss": rec["loss"], "lr": rec["lr"],
                         "flops": self.fpt * tokens})
        if not self._is_eval(s) and not self._is_ckpt(s):
            self.ckpt.emit()

    def on_eval(self, rec: dict[str, Any]) -> bool:
        if self.ckpt.staged is not None and self.ckpt.staged["step"] == rec["step"]:
            self.ckpt.staged["val_loss"] = rec["val_loss"]
        if not self._is_ckpt(rec["step"]):
            self.ckpt.emit()
        return False

    def on_step(self, s: int) -> None:
        # steady-state throughput leaves out the first steps, where fla compiles and autotunes its kernels
        if s == self.warm:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.mark["train_s"] = self.ckpt.train_s()


def train_lm(config: dict[str, Any], reporter, *, restored_dir: str | None = None, rank: int = 0,
             world: int = 1, device=None) -> dict[str, Any]:
    """One training process (the whole trial, or one data-parallel rank: only rank 0 writes checkpoints)."""


    check_env(config)
    if restored_dir and (Path(restored_dir) / FINAL_FILE).is_file():  # a finished data-parallel run
        return json.loads((Path(restored_dir) / FINAL_FILE).read_text())

    tr, rc = config["train"], config["recipe"]
    device = device if device is not None else default_device()
    planned = config.get("device")  # the device class the trial_key says (a CPU and a GPU run are two trials)
    if planned is not None and planned != device.type:
        raise PermanentError(f"the trial was planned for device class {planned!r} (part of its trial_key) but runs on "
                           f"{device.type!r} here: plan and run on the same kind of machine")
    reset_peak_memory(device)
    data_dir = config.get("data_dir")
    if config.get("data_local"):  # a cluster node: the shards are built here from the spec (grid/data/cache.py)

        try:
            data_dir = ensure_local(config["data_spec"], config.get("data_hash"))["dir"]
        except ValueError as exc:  # this node's data differs: another attempt cannot fix that
            raise PermanentError(str(exc)) from None
    if not data_dir:
        raise LMTrialError("config has no data_dir (the prepared token shards; `python -m grid run` sets it)")
    train_data, val_data = TokenShards(data_dir, "train"), TokenShards(data_dir, "val")
    have = train_data.manifest.get("content_hash")
    if config.get("data_hash") is not None and have != config["data_hash"]:
        raise LMTrialError(f"data dir {data_dir} has content_hash {have} but the trial was planned for "
                           f"{config['data_hash']}: prepare the grid's data spec again (the trial_key covers the data)")
    mcfg = ModelConfig.model_validate(config["model"])
    if train_data.vocab_size != mcfg.vocab_size:
        raise LMTrialError(f"model vocab_size {mcfg.vocab_size} != data vocab_size {train_data.vocab_size}")

    batch, seq, steps = int(tr["batch_size"]), int(tr["seq_len"]), int(tr["steps"])
    if batch % world:
        raise LMTrialError(f"batch_size {batch} does not split over {world} data-parallel workers")
    local = batch // world
    micro = min(int(tr["micro_batch_size"]), local)
    if local % micro:
        raise LMTrialError(f"micro_batch_size {micro} does not divide the per-worker batch {local} "
                           f"(batch {batch} over {world} workers)")
    accum = local // micro


    mcfg, gate = gate_model(mcfg, seq, micro, device, rc["precision"])  # fused kernels checked on this host
    torch.manual_seed(int(config["seed"]))  # the same initial weights on every rank
    model = build_model(mcfg).to(device)
    counts = account(model).summary()
    # recipe.compile: fuse the eager ops around the kernels (norms, RoPE, SwiGLU, casts) on GPU. In place,
    # so state_dict names and checkpoints are the same as without it. CPU runs stay eager (no compiler needed).
    compiled = bool(rc.get("compile")) and device.type == "cuda"
    if compiled:
        compile_model(model)
    net = model
    if world > 1:
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    optimizer = build_adamw(model, float(tr["lr"]), float(rc["weight_decay"]),
                            no_decay=not rc["decay_norms_biases_embeddings"], betas=tuple(rc["betas"]),
                            eps=float(rc["eps"]))
    schedule = WarmupCosine(float(tr["lr"]), int(tr["warmup_steps"]), steps, float(rc["min_lr_ratio"]))
    fpt = float(counts["train_flops_per_token"])
    every, eval_every, ckpt_every = log_every(rc), int(rc["eval_every"]), int(rc["ckpt_every"])
    evals_block = config.get("evals")
    scored: dict[int, dict[str, Any]] = {}  # step -> recall scores of the model after that step

    def recall_scores(step: int) -> dict[str, Any]:
        if step not in scored:
            scored[step] = run_evals(model, evals_block, data_dir, trained_len=seq, device=device,
                                     precision=rc["precision"])
        return scored[step]

    def checkpoint_scores(step: int) -> dict[str, Any]:
        # the last checkpoint too: its curve point then carries the row's scores (the runner's final report
        # repeats the latest curve metrics, so a later point without them would show stale ones)
        return recall_scores(step)

    at_ckpts = bool(evals_block and evals_block.get("at_checkpoints"))
    ckpt = _CurveCheckpointer(reporter, restored_dir, writer=rank == 0,
                              point_extras=checkpoint_scores if at_ckpts else None)

    task = LMTask(model=model, train_data=train_data, val_data=val_data, ckpt=ckpt, schedule=schedule, seq=seq,
                  local=local, micro=micro, accum=accum, rank=rank, world=world, device=device, steps=steps,
                  eval_every=eval_every, ckpt_every=ckpt_every, max_windows=int(rc["eval_batches"]) * batch,
                  flops_per_token=fpt, warm=throughput_warmup_steps(steps))
    if ckpt.restore() is not None:  # re-report the curve so far, then the loop resumes from the state
        ckpt.replay()
    ckpt.seg_start = time.perf_counter()
    result = train(net, optimizer, task, max_steps=steps, eval_every=eval_every, eval_at_end=True,
                   grad_clip=float(rc["grad_clip"]), grad_accum=accum, precision=rc["precision"], checkpointer=ckpt,
                   ckpt_every=ckpt_every, guard=float(rc["divergence_factor"]), guard_warmup=int(tr["warmup_steps"]),
                   sync_every=every)
    train_s = ckpt.train_s()
    ckpt.emit()  # normally a no-op: every staged point is reported within its step

    tokens_seen = int(result.tokens_seen) * world
    tokens_per_s_all = result.steps * batch * seq / train_s if result.steps and train_s > 0 else None
    warm = task.warm
    steady_s = train_s - task.mark["train_s"] if "train_s" in task.mark else 0.0
    steady = steady_s > 0 and result.steps > warm
    tokens_per_s = (result.steps - warm) * batch * seq / steady_s if steady else tokens_per_s_all
    gpu = current_gpu_name() if device.type == "cuda" else None
    mem, mem_kind = peak_memory_gib(device)
    evals = [h for h in result.history if "val_loss" in h]
    diverged = result.status == "diverged"
    val_loss = float("nan") if diverged or not evals else float(evals[-1]["val_loss"])
    out: dict[str, Any] = {
        "status": "diverged" if diverged else "ok",
        "val_loss": val_loss,
        "val_ppl": math.exp(min(val_loss, 700.0)) if math.isfinite(val_loss) else float("nan"),
        "train_loss": result.last_loss if result.last_loss is not None else float("nan"),
        "tokens_per_s": tokens_per_s,
        "tokens_per_s_all_steps": tokens_per_s_all,
        "throughput_from_step": warm if steady else 0,
        "mfu": mfu(fpt, tokens_per_s, gpu, world),
        "peak_mem_gib": mem,
        "peak_mem_kind": mem_kind,
        "non_embedding_params": int(counts["non_embedding_params"]),
        "total_params": int(counts["total_params"]),
        "state_size": int(counts["state_size"]),
        "train_flops_per_token": fpt,
        "train_flops": fpt * tokens_seen,
        "effective_ratio": counts["effective_ratio"],
        "attention_layers": ",".join(map(str, counts["attention_layers"])),
        **run_fields(result, backends=model.backends, device=f"{device.type}" + (f" ({gpu})" if gpu else ""),
                     compiled=compiled, gate_row=gate.row(), tokens_scale=world),
        "world_size": world,
        "train_s": train_s,
        "resumed_from": result.resumed_from,
    }
    if diverged:
        out["error"] = result.diverged_reason
    elif not math.isfinite(val_loss):
        out.update(status="nan", error="the final validation loss is not finite")
    elif evals_block and rank == 0:
        out.update(recall_scores(int(result.steps)))
    return out


__all__ = ["LMTrialError", "check_env", "lm_loss", "run_lm", "train_lm"]
