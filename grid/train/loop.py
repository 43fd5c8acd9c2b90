"""THE training loop: step-based, used by MAD runs and by LM pretraining.

Contract
--------
`train(model, optimizer, task, ...)`: the run's `task` (grid/train/task.py: TrainTask) gives the batches,
the loss, the learning rate, the evaluation and what happens with each evaluation.
* `task.batch(step) -> (x, y)` returns the whole batch of optimizer step `step` (0-based). The loop
  moves it to the model's device and, with `grad_accum = k`, splits it along dim 0 into k
  micro-batches whose losses are weighted by their share of the rows (exactly the full-batch
  mean when every row carries the same number of targets, as in LM pretraining).
* `task.loss(model, x, y) -> scalar tensor` (the mean loss of that micro-batch; add `model.aux_loss`
  there for MoE). A member-stacked model (grid/models/stacked.py: M runs trained as one) returns
  one loss per member, a 1-D tensor: the backward runs on its sum (members' parameters are
  disjoint, so each gets its own run's gradient), and `task.reduce_losses(steps, values)` turns each
  step's member losses (lists, read back with the others) into the one number the loop checks and
  logs, doing the members' own bookkeeping on the way (grid/train/members.py).
* `task.lr(step) -> lr` is written into every param group before each step (None: leave the
  optimizer's lrs alone). Because batches and lrs are functions of the step only, a run resumed
  from a checkpoint (model, optimizer, step, RNG states, loop counters) reproduces the straight run.
* `task.evaluate(step) -> dict` (tasks that have one) runs every `eval_every` steps (and once at the
  end, `eval_at_end`) in eval mode, under `torch.no_grad()` and the same autocast as training. Each
  evaluation becomes a history record `{step, train_loss (mean since the previous evaluation), lr,
  tokens_seen, wall_s, **metrics}`, passed to `task.on_eval(record)`, which may end training early by
  returning True (status 'ok', `stopped_early=True`).
* Divergence guard: a non-finite step loss, or (with `guard`) a loss above `guard` x the running
  minimum after `guard_warmup` steps, ends training with status 'diverged' and `diverged_step`
  = the 0-based index of the offending step (`steps` = the steps completed before it).
  Step losses are read back to the host every `sync_every` steps (and before every evaluation and
  checkpoint), not every step: a device sync per step would stall small models on a GPU. The
  reported step is exact either way; at most `sync_every - 1` further steps were taken.
* Checkpoints: with a `checkpointer` (save/load, see grid.train.checkpoint) the loop restores
  its latest state at start (`resume=True`) and saves every `ckpt_every` steps and at the end.
* `task.after_eval(record) -> bool` runs after `on_eval` when training goes on: it may
  replace the model's or optimizer's tensors (a stacked model dropping finished members); True
  says it did, and a CUDA-graphed step is captured again for the new shapes.
* `task.on_step(steps_done)` runs after every optimizer step (host side, no device sync): a hook for
  timing marks such as the trainer's steady-state throughput window.
* precision 'bf16' autocasts to bfloat16 on CUDA only; on CPU training is fp32 (recorded in
  `TrainResult.precision`).
* `cuda_graph=True` (CUDA only; CPU runs ignore it) replays the step from a captured CUDA graph
  after a few eager warm-up steps (grid.train.graphed); `TrainResult.graph_replays` counts the
  graph steps and `graph_fallback` says why they stopped or never started.
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn as nn

from grid.train.checkpoint import Checkpointer, FORMAT, plain, rng_state, set_rng_state
from grid.train.graphed import EAGER_LOCK, GraphedStep, set_lr
from grid.train.task import TrainTask

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainResult:
    status: Literal["ok", "diverged"]
    steps: int  # optimizer steps completed
    history: list[dict[str, Any]]
    wall_s: float  # summed over resumed segments
    tokens_seen: int  # input elements (x.numel()) of all completed steps
    stopped_early: bool = False
    diverged_step: int | None = None
    diverged_reason: str | None = None
    last_loss: float | None = None  # mean train loss of the last logging window
    min_loss: float | None = None
    precision: str = "fp32"
    resumed_from: int | None = None  # step of the checkpoint this process started from
    graph_replays: int = 0  # steps that ran as a replayed CUDA graph (cuda_graph=True)
    graph_fallback: str | None = None  # why the steps stayed eager although cuda_graph=True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _LoopState:
    step: int = 0
    tokens_seen: int = 0
    min_loss: float = math.inf
    window_sum: float = 0.0  # train losses since the last evaluation
    window_n: int = 0
    last_loss: float | None = None
    wall_s: float = 0.0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def autocast_ctx(device: torch.device, precision: str, cache: bool = True):
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def effective_precision(device: torch.device, precision: str) -> str:
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision={precision!r} is not allowed; allowed: bf16, fp32")
    return "bf16" if precision == "bf16" and device.type == "cuda" else "fp32"


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _split(x: torch.Tensor, y: torch.Tensor, k: int) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    if k == 1:
        return [(x, y, 1.0)]
    n = x.shape[0]
    if n < k:
        raise ValueError(f"grad_accum={k} is larger than the batch ({n} rows)")
    return [(xc, yc, xc.shape[0] / n) for xc, yc in zip(x.tensor_split(k), y.tensor_split(k))]


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, x: torch.Tensor, y: torch.Tensor, *,
                   grad_accum: int, grad_clip: float | None, device: torch.device, precision: str,
                   set_to_none: bool = True, autocast_cache: bool = True) -> torch.Tensor:
    """One optimizer step on the batch (x, y): forward, backward (accumulated over micro-batches),
    clipping, update. Returns the batch's mean loss as a detached device tensor (no host sync)."""
    optimizer.zero_grad(set_to_none=set_to_none)
    total = None
    for xc, yc, w in _split(x, y, grad_accum):
        with autocast_ctx(device, precision, cache=autocast_cache):
            loss = loss_fn(model, xc, yc)
        objective = loss.sum() if loss.dim() else loss  # one loss per member: their sum
        (objective * w if w != 1.0 else objective).backward()
        part = loss.detach().float() * w
        total = part if total is None else total + part
    if grad_clip is not None and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return total


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    task: TrainTask,
    *,
    max_steps: int,
    eval_every: int = 0,
    eval_at_end: bool = True,
    grad_clip: float | None = None,
    grad_accum: int = 1,
    precision: Literal["bf16", "fp32"] = "fp32",
    checkpointer: Checkpointer | None = None,
    ckpt_every: int = 0,
    resume: bool = True,
    guard: float | None = None,
    guard_warmup: int = 0,
    sync_every: int = 1,
    cuda_graph: bool = False,
) -> TrainResult:
    """Train `model` for up to `max_steps` optimizer steps. See the module docstring for the contract."""
    if max_steps < 0 or grad_accum < 1 or sync_every < 1:
        raise ValueError(f"need max_steps >= 0, grad_accum >= 1, sync_every >= 1 "
                         f"(got {max_steps}, {grad_accum}, {sync_every})")
    device = _model_device(model)
    prec = effective_precision(device, precision)
    evaluates = task.evaluates
    st = _LoopState()
    resumed_from = None
    if checkpointer is not None and resume:
        saved = checkpointer.load()
        if saved is not None:
            _restore(saved, model, optimizer, st)
            resumed_from = st.step

    def result(status="ok", bad_step=None, reason=None) -> TrainResult:
        return TrainResult(status=status, steps=st.step, history=st.history, wall_s=st.wall_s,
                           tokens_seen=st.tokens_seen, stopped_early=st.stopped_early, diverged_step=bad_step,
                           diverged_reason=reason, last_loss=st.last_loss,
                           min_loss=None if math.isinf(st.min_loss) else st.min_loss, precision=prec,
                           resumed_from=resumed_from)

    if st.stopped_early or st.step >= max_steps:
        return result()

    step_fn = functools.partial(optimizer_step, model, optimizer, task.loss, grad_accum=grad_accum,
                                grad_clip=grad_clip, device=device, precision=prec)
    graphs: list = []  # the live GraphedStep (a stacked model that shrank has had several, one per shape)
    retired = {"replays": 0, "fallback": None}  # what the earlier ones did (their graph memory is freed)

    def new_graph():
        if not (cuda_graph and device.type == "cuda"):  # CPU runs stay eager (recorded: graph_replays 0)
            return None

        for old in graphs:
            retired["replays"] += old.replays
            retired["fallback"] = retired["fallback"] or old.fallback_reason
        graphs[:] = [GraphedStep(step_fn, model, optimizer, device)]
        return graphs[0]

    def graph_stats() -> tuple[int, str | None]:
        return (retired["replays"] + sum(g.replays for g in graphs),
                retired["fallback"] or next((g.fallback_reason for g in graphs if g.fallback_reason), None))

    graphed = new_graph()

    t0 = time.perf_counter()
    pending: list[tuple[int, torch.Tensor]] = []  # (step index, device loss) not yet read back
    lr = task.lr(st.step)  # may be a tensor (members' lrs)
    if lr is None:
        lr = float(optimizer.param_groups[0]["lr"])

    def flush() -> tuple[int, str] | None:
        """Read pending losses back; the first bad one ends training."""
        if not pending:
            return None
        if device.type == "cuda":  # wait with the GIL released: packed runs' threads keep launching meanwhile
            torch.cuda.current_stream(device).synchronize()
        values = torch.stack([v for _, v in pending]).float().cpu().tolist()
        steps = [s for s, _ in pending]
        pending.clear()
        if values and isinstance(values[0], list):
            values = task.reduce_losses(steps, values)
        win_sum, win_n = 0.0, 0
        for s, v in zip(steps, values):
            if not math.isfinite(v):
                return s, f"non-finite loss {v} at step {s}"
            if guard is not None and s >= guard_warmup and v > guard * st.min_loss:
                return s, f"loss {v:.4g} at step {s} > guard {guard} x running min {st.min_loss:.4g}"
            st.min_loss = min(st.min_loss, v)
            win_sum += v
            win_n += 1
        st.window_sum += win_sum
        st.window_n += win_n
        st.last_loss = win_sum / win_n
        return None

    model.train()
    status, bad = "ok", None
    while st.step < max_steps:
        step = st.step
        step_lr = task.lr(step)
        if step_lr is not None:
            lr = step_lr
            set_lr(optimizer, lr)
        x, y = task.batch(step)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        total = graphed(x, y) if graphed is not None else step_fn(x, y)
        pending.append((step, total))
        st.step += 1
        st.tokens_seen += x.numel()
        task.on_step(st.step)

        done = st.step >= max_steps
        eval_due = evaluates and ((eval_every > 0 and st.step % eval_every == 0) or (done and eval_at_end))
        ckpt_due = checkpointer is not None and ckpt_every > 0 and (st.step % ckpt_every == 0 or done)
        if eval_due or ckpt_due or done or st.step % sync_every == 0:
            bad = flush()
            if bad is not None:
                st.step = bad[0]  # the steps completed before the offending one
                status = "diverged"
                break
            task.on_sync({"step": st.step, "loss": st.last_loss, "lr": lr, "tokens_seen": st.tokens_seen,
                          "wall_s": st.wall_s + time.perf_counter() - t0,
                          "graph_replays": graph_stats()[0], "graph_fallback": graph_stats()[1]})
        stop = False
        if eval_due:
            model.eval()
            with EAGER_LOCK, torch.no_grad(), autocast_ctx(device, prec):  # packed runs: see graphed.py
                metrics = task.evaluate(st.step)
            model.train()
            record = {"step": st.step,
                      "train_loss": st.window_sum / st.window_n if st.window_n else float("nan"),
                      "lr": lr, "tokens_seen": st.tokens_seen,
                      "wall_s": st.wall_s + time.perf_counter() - t0, **plain(dict(metrics))}
            st.window_sum, st.window_n = 0.0, 0
            st.history.append(record)
            if task.on_eval(record):
                st.stopped_early = stop = True
            if not stop and task.after_eval(record):
                graphed = None  # the old graph's shapes are gone: free it before capturing the new one
                graphed = new_graph()
        if ckpt_due or (stop and checkpointer is not None and ckpt_every > 0):
            checkpointer.save(_snapshot(model, optimizer, st, st.wall_s + time.perf_counter() - t0))
        if stop:
            break
    st.wall_s += time.perf_counter() - t0
    res = result("diverged", bad[0], bad[1]) if status == "diverged" else result()
    if graphs:
        res.graph_replays, res.graph_fallback = graph_stats()
    return res


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, st: _LoopState, wall_s: float) -> dict[str, Any]:
    loop = {k: v for k, v in asdict(st).items() if k != "history"}
    loop["wall_s"] = wall_s
    loop["min_loss"] = None if math.isinf(st.min_loss) else st.min_loss
    return {"format": FORMAT, "step": st.step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": rng_state(), "loop": plain(loop), "history": plain(st.history)}


def _restore(saved: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, st: _LoopState) -> None:
    if saved.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {saved.get('format')!r} is not supported; allowed: {FORMAT}")
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    set_rng_state(saved["rng"])
    loop = saved["loop"]
    st.step = int(saved["step"])
    st.tokens_seen = int(loop["tokens_seen"])
    st.min_loss = math.inf if loop["min_loss"] is None else float(loop["min_loss"])
    st.window_sum, st.window_n = float(loop["window_sum"]), int(loop["window_n"])
    st.last_loss = loop["last_loss"]
    st.wall_s = float(loop["wall_s"])
    st.stopped_early = bool(loop["stopped_early"])
    st.history = list(saved["history"])
