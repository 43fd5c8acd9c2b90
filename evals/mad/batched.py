"""Batched MAD runs: the runs of one setting that differ only in lr and weight decay, trained as ONE
member-stacked model on the one training loop; every member reports the row its solo run would.

    run_mad_group(configs, contexts=None, on_done=None) -> list[dict]    # one run_mad result per config
    batchable(config, gpus) -> (bool, reason)                             # driver side, before any work

Why: all 6 (lr, wd) runs of a MAD setting start from the same weights (seeded before the model is
built) and see the same batches (the order is a function of seed and epoch), so one batch of token
ids serves every member; only weights and optimizer hyperparameters differ. Stacked, a step is one
GEMM, norm and mixer kernel per layer for all members instead of one per member (docs/gpu.md).

What a member computes is its solo run's (evals/mad/protocol.py, run_mad):
* the initial weights are the solo model's, built by the same `_setup` (seed, data, backbone and the
  protocol's init), then stacked (grid/models/stacked.py); the batches come from the same
  `batch_fn`, the lrs from the same `lr_schedule`, one per member (grid/train/member_optim.py:
  torch AdamW's update with the member's lr and weight decay);
* the loss is the sum of the members' mean cross-entropies (disjoint parameters: each member gets
  exactly its own gradient); evaluation runs all members in one forward and scores each member's
  logits with the solo functions (evals/mad/metrics.py);
* each member stops on its own, by the solo rule (`stops`): early stop on test accuracy, a
  non-finite test loss, or a non-finite training loss (at the first such step, found when the
  loop reads losses back once per epoch, as for a solo run: grid/train/members.py); a finished
  member's slices are dropped from the model and the optimizer at once (the CUDA graphs of the
  step and of the evaluation are captured again for the smaller stack), so it stops costing
  compute;
* its row comes from the same `run_row`, with its own history, steps, tokens and times.
Differences from solo runs, by construction: batched GEMMs and the stacked embedding's gradient may
round differently; `compile` is not applied (rows say compiled=False); `eval_train` and
checkpoints are not supported (`batchable` says so, and the caller runs such configs unbatched).
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any, Callable

import torch

from evals.mad.backbones import token_cross_entropy
from evals.mad.metrics import member_batch_rows, split_metrics
from evals.mad.protocol import (MADRunConfig, MADSteps, REPORTED, _SETUP_LOCK, _setup, batch_fn, lr_schedule,
                                resolve_device, run_row, stops)
from grid.keys import canonical_json
from grid.models.stacked import stack_model, stackable
from grid.train.graphed import GraphedCall
from grid.train.loop import TrainResult, effective_precision, train
from grid.train.member_optim import MemberAdamW, MemberSchedule
from grid.train.members import MemberLosses

# what the members of one group may differ in: everything else must be equal
MEMBER_FIELDS = ("lr", "weight_decay")


def group_key(cfg: MADRunConfig) -> str:
    """Configs with equal keys can train as one group."""
    return canonical_json({k: v for k, v in cfg.model_dump(mode="json").items() if k not in MEMBER_FIELDS})


def batchable(cfg: MADRunConfig, gpus: int) -> tuple[bool, str]:
    """Whether `cfg` can run as a member of a batched group on a worker that sees `gpus` GPUs (backend
    'auto' is taken as fused with a GPU, reference without); the reason when it cannot."""

    if cfg.eval_train:
        return False, "eval_train needs each member's best weights (not kept by batched runs)"
    backend = cfg.backend if cfg.backend != "auto" else ("fused" if gpus > 0 else "reference")
    mcfg = cfg.model_cfg(cfg.mad_setting().seq_len)
    kinds = {mcfg.mixer} | ({"attention"} if mcfg.layout().attention_layers else set())
    bad = sorted(k for k in kinds if not stackable(k, backend))
    if bad:
        return False, f"mixer {', '.join(bad)} ({backend}) cannot be stacked (grid/models/stacked.py: STACKABLE)"
    return True, ""


def member_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One mean cross-entropy per member (the solo loss of each member's logits) -> [M]."""

    return torch.stack([token_cross_entropy(logits, y) for logits in model(x)])


class GroupTask(MADSteps):
    """A batched group's runs for the loop: one stacked model, per-member losses, lrs and evaluations. A member
    that diverges or stops early is finished (`finish(m, **TrainResult fields)`, set by run_mad_group) at the
    next evaluation and its slice dropped from the model, the optimizer and the schedule."""

    def __init__(self, cfgs, model, optimizer, schedule, losses, get_batch, test, steps_per_epoch: int, device,
                 contexts):
        super().__init__(get_batch, schedule)
        self.cfgs, self.model, self.optimizer, self.losses = cfgs, model, optimizer, losses
        self.test, self.spe, self.contexts = test, steps_per_epoch, contexts
        self.histories: dict[int, list[dict[str, Any]]] = {m: [] for m in losses.ids}
        self.finished: set[int] = set()
        self.finish: Callable[..., None] = lambda m, **fields: None
        self.graphed = cfgs[0].cuda_graph and device.type == "cuda"
        self.device = device
        self.eval_graphs: list = []  # the live evaluation graph (one per stack shape; earlier ones freed)
        self.eval_retired: dict[str, Any] = {"replays": 0, "fallback": None}
        self.live: dict[str, Any] = {"graph_replays": 0, "graph_fallback": None}  # the step graphs so far
        self.eval_graph = self.new_eval_graph()

    def new_eval_graph(self):
        if not self.graphed:
            return None

        for old in self.eval_graphs:
            self.eval_retired["replays"] += old.replays
            self.eval_retired["fallback"] = self.eval_retired["fallback"] or old.fallback_reason
        model = self.model
        self.eval_graphs[:] = [GraphedCall(lambda x, y: member_batch_rows(model(x), y), self.device)]
        return self.eval_graphs[0]

    def eval_graph_summary(self):
        if not self.eval_graphs:
            return None
        return SimpleNamespace(replays=self.eval_retired["replays"] + self.eval_graphs[0].replays,
                               fallback_reason=self.eval_retired["fallback"] or self.eval_graphs[0].fallback_reason)

    def loss(self, model, x, y):
        return member_loss(model, x, y)

    def reduce_losses(self, steps, values):
        return self.losses.reduce(steps, values)

    def evaluate(self, step: int) -> dict[str, Any]:
        (xte, yte), bs, sums = self.test, self.cfgs[0].batch_size, None
        for i in range(0, xte.shape[0], bs):
            x, y = xte[i:i + bs], yte[i:i + bs]
            rows = self.eval_graph(x, y) if self.eval_graph is not None else member_batch_rows(self.model(x), y)
            sums = rows if sums is None else sums + rows
        if sums.is_cuda:  # wait with the GIL released, as MADMetrics.compute
            torch.cuda.current_stream(sums.device).synchronize()
        per = [split_metrics(r) for r in sums.cpu().tolist()]
        return {"epoch": step // self.spe - 1,
                "members": [{"test_acc": m["acc"], "test_acc_micro": m["acc_micro"], "test_ppl": m["ppl"],
                             "test_loss": m["loss"]} for m in per]}

    def _finish(self, m: int, **fields: Any) -> None:
        self.finished.add(m)
        self.finish(m, **fields)

    def on_eval(self, record: dict[str, Any]) -> bool:
        """Each member's epoch record; the group stops when every member has finished."""
        at = dict(wall_s=record["wall_s"], tokens_seen=record["tokens_seen"])
        for j, m in enumerate(self.losses.ids):
            if m in self.finished:
                continue
            if m in self.losses.diverged:  # its solo run would have stopped before this evaluation
                bad, reason = self.losses.diverged[m]
                self._finish(m, status="diverged", steps=bad, diverged_step=bad, diverged_reason=reason, **at)
                continue
            rec = {"step": record["step"], "train_loss": self.losses.pop_window(m), "lr": record["lr"][j], **at,
                   "epoch": record["epoch"], **record["members"][j]}
            self.histories[m].append(rec)
            if self.contexts[m] is not None:
                self.contexts[m].report({k: rec[k] for k in REPORTED})
            if stops(self.cfgs[m], rec):
                self._finish(m, status="ok", steps=record["step"], stopped_early=True, **at)
        return len(self.finished) == len(self.cfgs)

    def after_eval(self, record: dict[str, Any]) -> bool:
        alive = [m for m in self.losses.ids if m not in self.finished]
        if len(alive) == len(self.losses.ids):
            return False
        idx = [self.losses.ids.index(m) for m in alive]  # the finished members' slices go
        self.model.keep(idx)
        self.optimizer.keep(idx)
        self.schedule.keep(idx)
        self.losses.keep(alive)
        self.eval_graph = None  # its shapes are gone: free it before capturing the next
        self.eval_graph = self.new_eval_graph()
        return True

    def on_sync(self, info: dict[str, Any]) -> None:
        self.live.update(graph_replays=info["graph_replays"], graph_fallback=info["graph_fallback"])


def run_mad_group(configs: list[dict[str, Any] | MADRunConfig], contexts: list | None = None,
                  on_done: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train the runs `configs` (one setting, differing only in lr and weight decay) as one stacked
    model; returns run_mad's result dict for each, in order. `contexts[i].report(metrics)` gets member
    i's epoch metrics (as run_mad's ctx); `on_done(i, result)` is called as member i finishes."""

    cfgs = [c if isinstance(c, MADRunConfig) else MADRunConfig.model_validate(c) for c in configs]
    if not cfgs:
        raise ValueError("run_mad_group needs at least one config")
    keys = {group_key(c) for c in cfgs}
    if len(keys) > 1:
        raise ValueError(f"a batched group's runs may differ only in {MEMBER_FIELDS}; got {len(keys)} different setups")
    contexts = list(contexts) if contexts is not None else [None] * len(cfgs)
    cfg = cfgs[0]
    setting = cfg.mad_setting()
    device = resolve_device(cfg.device)
    t_start = time.perf_counter()
    with _SETUP_LOCK:  # the same seeding and init as every solo run of the setting
        solo, mcfg, (xtr, ytr), (xte, yte), gate = _setup(cfg, setting, device)
        model = stack_model(solo, len(cfgs))
    n_params, backends = sum(p.numel() for p in solo.parameters()), solo.backends
    del solo
    get_batch, spe = batch_fn(xtr, ytr, cfg, device)
    optimizer = MemberAdamW(model.parameters(), [c.lr for c in cfgs], [c.weight_decay for c in cfgs])
    schedule = MemberSchedule([lr_schedule(c, spe) for c in cfgs])
    losses = MemberLosses(range(len(cfgs)))  # member ids = positions in `configs`
    results: dict[int, dict[str, Any]] = {}
    prec = effective_precision(device, cfg.precision)
    task = GroupTask(cfgs, model, optimizer, schedule, losses, get_batch, (xte, yte), spe, device, contexts)

    def finish(m: int, **fields: Any) -> None:
        result = TrainResult(history=task.histories[m], precision=prec, **{**task.live, **fields})
        row = run_row(cfgs[m], setting, mcfg, n_params=n_params, backends=backends, device=device, compiled=False,
                      gate=gate, result=result, steps_per_epoch=spe, eval_graph=task.eval_graph_summary())
        row["run_wall_s"] = time.perf_counter() - t_start
        row["train_wall_s"] = result.wall_s
        results[m] = row
        if on_done is not None:
            on_done(m, row)

    task.finish = finish
    result = train(model, optimizer, task, max_steps=cfg.epochs * spe, eval_every=spe, precision=cfg.precision,
                   sync_every=spe, cuda_graph=cfg.cuda_graph)
    task.live.update(graph_replays=result.graph_replays, graph_fallback=result.graph_fallback)
    for m in losses.ids:  # the members still stacked when training ended
        if m in results:
            continue
        at = dict(wall_s=result.wall_s, tokens_seen=result.tokens_seen)
        if m in losses.diverged:
            bad, reason = losses.diverged[m]
            finish(m, status="diverged", steps=bad, diverged_step=bad, diverged_reason=reason, **at)
        else:
            finish(m, status="ok", steps=result.steps, stopped_early=False, **at)
    return [results[m] for m in range(len(cfgs))]
