"""One MAD run (spec/mad.md §5.1) under a named protocol (evals/mad/protocols.py), on the project's
one training loop.

    run_mad(config: dict | MADRunConfig, ctx=None, *, checkpointer=None, ckpt_every_epochs=1) -> dict

One run = one (task setting, architecture, lr, weight decay, protocol):
1. seed python / numpy / torch with `seed` (12345) before the backbone is built: all 6 sweep runs of
   a setting start from the same weights and see the same shuffles (mad-lab builds its model before
   it seeds, so its initial weights depend on the worker's RNG history: docs/mad.md);
2. `ensure_data(setting, data_root)` then `load_split` train and test; both splits live on the device
   as tensors (no DataLoader: MAD arrays are small and there are thousands of runs);
3. backbone: the MAD LM stack, or the AutoEncoder for compression (evals/mad/backbones.py),
   initialised as the protocol says;
4. AdamW on ALL parameters (torch default betas/eps, weight decay on everything as mad-lab), no
   warmup, no clipping; the lr is constant (`madlab`) or CosineAnnealingLR(T_max=epochs,
   eta_min=min_lr) stepped once per epoch (`cosine`);
5. each epoch: train over a fresh permutation of the training set (batches of `batch_size`, the
   last one smaller: drop_last off; the permutation of epoch e comes from a torch Generator
   seeded with (seed, e), so batches depend on the step only and resume is exact), then evaluate
   on the test set (macro accuracy per batch, batch-weighted: evals/mad/metrics.py);
6. stop as soon as an epoch's test accuracy passes `stop_acc` (0.999; `> ` under `madlab`, `>=`
   under `cosine`);
7. report `acc` = test accuracy of the epoch with the LOWEST TEST PERPLEXITY (mad-lab's "best"
   checkpoint; first such epoch on ties), plus `acc_last`, `acc_best` (max over epochs),
   `acc_micro` (selected epoch), `ppl`, `loss`, `best_epoch` (0-based, as Lightning),
   `epochs_run`, `stopped_early`, `train_loss`.
A non-finite training (or test) loss ends the run with `nan` True and the step in `diverged_step`.
Under `madlab` the row then reports the pre-divergence best (status 'ok': what mad-lab's final
validate returns), or status 'nan' with no score when no epoch was finite (mad-lab drops such rows);
under `cosine` it is status 'nan' with acc 0 and the pre-divergence best in `acc_pre_nan`.
bf16 autocast is used on CUDA only ('fp32' on CPU; the `precision` column records what ran).

`ctx` is the runner's trial context: `ctx.report(metrics, checkpoint_dir=None)` is called once per
epoch with the epoch's metrics.
"""
from __future__ import annotations

import math
import random
import threading
import time
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evals.mad.arch import arch_model_config
from evals.mad.backbones import build_backbone, mad_loss
from evals.mad.data import ensure_data, load_split
from evals.mad.metrics import batch_row, evaluate_batches
from evals.mad.protocols import DEFAULT_PROTOCOL, ProtocolName, get_protocol
from evals.mad.settings import MADSetting
from grid.check.gate import gate_model
from grid.models import ConfigError, ModelConfig
from grid.models.compile import compile_model
from grid.train import Constant, CosinePerEpoch, TrainTask, build_adamw, run_fields, train
from grid.train.graphed import GraphedCall
from grid.train.loop import autocast_ctx

MACRO = "macro-per-batch"  # the headline metric's definition (spec §5.2)


class MADRunConfig(BaseModel):
    """Everything that defines one MAD run. Give either `model` (a full ModelConfig dict; see
    `evals.mad.backbones.mad_model_config` for MAD's shape) or `arch` (+ `layer_settings`)."""

    model_config = ConfigDict(extra="forbid")

    setting: dict[str, Any] = Field(description="MADSetting as a dict")
    model: dict[str, Any] | None = Field(None, description="ModelConfig as a dict (vocab_size/context filled in)")
    arch: str | None = Field(None, description="named architecture of configs/mad/architectures.yaml")
    layer_settings: dict[str, Any] = Field(default_factory=dict, description="overlay on the arch's mixer_kwargs")
    resolved_model: dict[str, Any] | None = Field(
        None, description="the ModelConfig this run builds, resolved from `arch` (configs/mad/architectures.yaml) or "
                          "`model` when the trial was planned: part of trial_key, so editing an architecture's "
                          "entry makes new trials; the run builds exactly this (None: resolve at run time)")
    backend: Literal["auto", "fused", "reference"] = Field("auto", description="mixer backend (arch runs)")
    model_id: str | None = Field(None, description="label of the architecture in tables (default: arch or mixer)")
    protocol: ProtocolName = Field(DEFAULT_PROTOCOL, description="what a run executes: madlab (mad-lab's code as it "
                                                                 "runs) or cosine (its config as written); "
                                                                 "evals/mad/protocols.py")
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(200, gt=0)
    batch_size: int = Field(128, gt=0)
    min_lr: float = Field(1e-6, ge=0, description="the cosine protocol's floor (unused by madlab's constant lr)")
    seed: int = 12345
    data_root: str = "benchmark/data"
    precision: Literal["bf16", "fp32"] = "bf16"
    num_workers: int = Field(0, ge=0, description="accepted for mad-lab CLI parity; unused (data stays on the device)")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...; a planned trial "
                                            "says its device class (cpu | cuda), which its trial_key covers")
    stop_acc: float = Field(0.999, gt=0, description="early stop when an epoch's test accuracy passes stop_acc "
                                                     "(> under madlab, >= under cosine)")
    max_train_examples: int | None = Field(
        None, gt=0, description="smoke runs only: train on the first N examples (a different protocol: recorded, "
                                "and scoring never mixes it with full runs)")
    eval_train: bool = Field(False, description="also evaluate the selected epoch's weights on the train set")
    cuda_graph: bool = Field(True, description="replay each training step and each evaluation batch from captured "
                                               "CUDA graphs on GPU (grid/train/graphed.py; same kernels, launch "
                                               "cost removed); CPU ignores it. Rows record the replays and any "
                                               "fallback reason")
    compile: bool = Field(False, description="torch.compile the backbone on GPU: Inductor fuses the elementwise work "
                                             "(norms, SwiGLU, casts, loss, their backward) around the mixers' "
                                             "fused kernels, which stay as they are; CPU ignores it. Rows record "
                                             "`compiled`")

    @field_validator("setting", "model", mode="before")
    @classmethod
    def _dump_models(cls, v: Any) -> Any:
        return v.model_dump() if isinstance(v, BaseModel) else v

    @model_validator(mode="after")
    def _check(self) -> MADRunConfig:
        if (self.model is None) == (self.arch is None):
            raise ValueError("give exactly one of `model` (a ModelConfig dict) or `arch` (a named MAD architecture)")
        if self.layer_settings and self.arch is None:
            raise ValueError("layer_settings only applies with `arch`; put mixer_kwargs into `model` instead")
        self.mad_setting()  # fail before any data or GPU time
        return self

    def mad_setting(self):
        return MADSetting.model_validate(self.setting)

    def model_cfg(self, seq_len: int) -> ModelConfig:
        if self.resolved_model is not None:
            mcfg = ModelConfig.model_validate(self.resolved_model)
            if mcfg.context != seq_len:
                raise ConfigError("resolved_model.context", mcfg.context, [seq_len], hint="the data's sequence length")
            return mcfg
        return self.resolve_model(seq_len)

    def resolve_model(self, seq_len: int) -> ModelConfig:
        """The ModelConfig of `arch` (+ layer_settings) or `model`, as the files say now."""
        setting = self.mad_setting()
        if self.arch is not None:
            return arch_model_config(self.arch, setting.vocab_size, seq_len, backend=self.backend,
                                     layer_settings=self.layer_settings)
        m = dict(self.model)
        if m.setdefault("vocab_size", setting.vocab_size) != setting.vocab_size:
            raise ConfigError("model.vocab_size", m["vocab_size"], [setting.vocab_size],
                              hint="must equal the MAD setting's vocab_size")
        m.setdefault("context", seq_len)
        return ModelConfig.model_validate(m)

    def label(self) -> str:
        if self.model_id:
            return self.model_id
        return self.arch if self.arch is not None else str(self.model.get("mixer", "model"))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training-set order of one epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2 ** 63))
    return torch.randperm(n, generator=g)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_split(model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
                   row_fn=None) -> dict[str, float]:
    """acc (macro per batch, batch-weighted), acc_micro, loss, ppl of `model` on one split."""

    return evaluate_batches(model, inputs, targets, batch_size, row_fn=row_fn)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def summarize(history: list[dict[str, Any]], stopped_early: bool) -> dict[str, Any]:
    """Final numbers from the per-epoch records (keys epoch, test_acc, test_ppl, test_loss,
    test_acc_micro, train_loss): selection = the first epoch with the lowest test perplexity
    (non-finite perplexities never win)."""
    if not history:
        raise ValueError("no epoch was evaluated")
    ppls = [h["test_ppl"] if _finite(h["test_ppl"]) else math.inf for h in history]
    best = min(range(len(history)), key=lambda i: (ppls[i], i))
    sel, last = history[best], history[-1]
    return {
        "acc": sel["test_acc"], "acc_last": last["test_acc"], "acc_best": max(h["test_acc"] for h in history),
        "acc_micro": sel["test_acc_micro"], "ppl": sel["test_ppl"], "loss": sel["test_loss"],
        "best_epoch": sel["epoch"], "epochs_run": len(history),
        "stopped_early": stopped_early,
        "train_loss": sel["train_loss"], "train_loss_last": last["train_loss"],
    }


_SETUP_LOCK = threading.Lock()


# ------------------------------------------------------------------ the pieces a run is made of
# (run_mad below; evals/mad/batched.py trains several runs of one setting as one stacked model with
# the same pieces, so that a member computes, stops and reports exactly as its solo run would)

def lr_schedule(cfg: MADRunConfig, steps_per_epoch: int):
    """The run's lr as a function of the step, as its protocol says."""
    if get_protocol(cfg.protocol).schedule == "constant":
        return Constant(cfg.lr)
    return CosinePerEpoch(cfg.lr, cfg.min_lr, cfg.epochs, steps_per_epoch)


def batch_fn(inputs: torch.Tensor, targets: torch.Tensor, cfg: MADRunConfig, device: torch.device):
    """(get_batch(step) -> (x, y), steps per epoch): the training batches of every step."""
    n_train, bs = int(inputs.shape[0]), cfg.batch_size
    spe = math.ceil(n_train / bs)
    perm_cache: dict[int, torch.Tensor] = {}

    def get_batch(step: int):
        epoch, i = divmod(step, spe)
        if epoch not in perm_cache:
            perm_cache.clear()
            perm_cache[epoch] = epoch_permutation(n_train, cfg.seed, epoch).to(device)
        idx = perm_cache[epoch][i * bs:(i + 1) * bs]
        return inputs[idx], targets[idx]

    return get_batch, spe


def stops(cfg: MADRunConfig, record: dict[str, Any]) -> bool:
    """Whether the run ends after this epoch's evaluation: its test accuracy passed stop_acc (as the
    protocol compares), or its test loss is not finite."""
    return get_protocol(cfg.protocol).should_stop(record["test_acc"], cfg.stop_acc) or not _finite(record["test_loss"])


REPORTED = ("epoch", "step", "test_acc", "test_acc_micro", "test_ppl", "test_loss", "train_loss", "lr")


def run_row(cfg: MADRunConfig, setting, mcfg, *, n_params: int, backends: dict[str, str], device: torch.device,
            compiled: bool, gate, result, steps_per_epoch: int, eval_graph=None) -> dict[str, Any]:
    """The run's result fields (what ran, status and scores as the protocol scores them) from its
    TrainResult; `eval_graph` has the evaluation graph's `replays` and `fallback_reason`."""
    out: dict[str, Any] = {
        "model_id": cfg.label(), "protocol": cfg.protocol, "arch": cfg.arch, "mixer": mcfg.mixer, "task": setting.code,
        "task_name": setting.task, "setting": setting.setting_id, "setting_dir": setting.dir_name,
        "lr": cfg.lr, "wd": cfg.weight_decay, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
        "max_train_examples": cfg.max_train_examples or 0,
        "min_lr": cfg.min_lr, "seed": cfg.seed, "metric": MACRO, "n_params": n_params,
        **run_fields(result, backends=backends, device=str(device), compiled=compiled, gate_row=gate.row()),
        "steps_per_epoch": steps_per_epoch, "error": result.diverged_reason, "cuda_graph_replays": result.graph_replays,
        "cuda_graph_fallback": result.graph_fallback,
        "eval_graph_replays": eval_graph.replays if eval_graph is not None else 0,
        "eval_graph_fallback": eval_graph.fallback_reason if eval_graph is not None else None,
    }
    history = result.history
    nan_eval = bool(history) and not _finite(history[-1]["test_loss"])
    if nan_eval:
        out["error"] = f"non-finite test loss at epoch {history[-1]['epoch']}"
    elif not history and result.status != "diverged":
        out["error"] = "no epoch was evaluated"
    if result.status == "diverged" or nan_eval or not history:
        out.update(_diverged_fields(get_protocol(cfg.protocol), history))
    else:
        out.update(status="ok", nan=False, **summarize(history, result.stopped_early))
    return out


def _setup(cfg: MADRunConfig, setting, device: torch.device):
    """Seed, load the data onto the device, pass the parity gate, build the backbone:
    (model, model config, train, test, gate decision)."""

    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as mad-lab
    ensure_data(setting, cfg.data_root)
    splits = {s: load_split(setting, cfg.data_root, s) for s in ("train", "test")}
    if cfg.max_train_examples is not None:
        splits["train"] = tuple(a[: cfg.max_train_examples] for a in splits["train"])
    train, test = [(torch.from_numpy(np.ascontiguousarray(x)).to(device),
                    torch.from_numpy(np.ascontiguousarray(y)).to(device)) for x, y in (splits["train"], splits["test"])]
    width = int(train[0].shape[1])
    mcfg, gate = gate_model(cfg.model_cfg(width), width, cfg.batch_size, device, cfg.precision)
    seed_everything(cfg.seed)  # after the gate's own draws: the initial weights depend on the seed only
    return build_backbone(mcfg, setting.code, width, cfg.protocol).to(device), mcfg, train, test, gate


_NO_SCORE = dict(acc=float("nan"), acc_last=float("nan"), acc_best=float("nan"), acc_micro=float("nan"),
                 ppl=float("nan"), loss=float("nan"), best_epoch=None, stopped_early=False,
                 train_loss=float("nan"), train_loss_last=float("nan"))


def _diverged_fields(proto, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Row fields of a run whose loss turned non-finite, as its protocol scores it. `epochs_run`
    counts the evaluated epochs (an epoch cut short by the divergence is not one)."""
    finite = [h for h in history if _finite(h["test_loss"])]
    pre = summarize(finite, stopped_early=False) if finite else None
    if proto.diverged == "pre-divergence-best":
        if pre is None:  # never finite: mad-lab's row is NaN and its analysis drops it
            return {**_NO_SCORE, "status": "nan", "nan": True, "epochs_run": len(history), "acc_pre_nan": float("nan")}
        # mad-lab's final validate reloads the min-test-perplexity checkpoint: a finite, scored row
        return {**pre, "status": "ok", "nan": True, "epochs_run": len(history), "acc_pre_nan": pre["acc"]}
    return {**_NO_SCORE, "status": "nan", "nan": True, "acc": 0.0, "acc_last": 0.0, "acc_best": 0.0, "acc_micro": 0.0,
            "epochs_run": len(history), "acc_pre_nan": pre["acc"] if pre else 0.0}


class MADSteps(TrainTask):
    """The training steps of MAD runs (solo and batched): epoch-permuted batches (`batch_fn`), the protocol's
    lr schedule, mad_loss."""

    def __init__(self, get_batch, schedule):
        self._batch, self.schedule = get_batch, schedule

    def batch(self, step):
        return self._batch(step)

    def loss(self, model, x, y):
        return mad_loss(model, x, y)

    def lr(self, step):
        return self.schedule(step)


class MADTask(MADSteps):
    """One MAD run for the loop: its steps (MADSteps), an evaluation on the test split per epoch (reported to
    the runner; the best-perplexity weights kept for eval_train), and the early stop of the protocol."""

    def __init__(self, cfg: MADRunConfig, model, get_batch, schedule, test, steps_per_epoch: int, device, ctx=None):
        super().__init__(get_batch, schedule)
        self.cfg, self.model = cfg, model
        self.test, self.spe, self.ctx = test, steps_per_epoch, ctx
        self.best_state: dict[str, Any] = {}
        self.graphed_eval = None
        if cfg.cuda_graph and device.type == "cuda":  # evaluation is launch-bound too: replay its forward

            self.graphed_eval = GraphedCall(lambda x, y: batch_row(model(x), y), device)

    def evaluate(self, step: int) -> dict[str, Any]:
        m = evaluate_split(self.model, *self.test, self.cfg.batch_size, row_fn=self.graphed_eval)
        return {"epoch": step // self.spe - 1, "test_acc": m["acc"], "test_acc_micro": m["acc_micro"],
                "test_ppl": m["ppl"], "test_loss": m["loss"]}

    def on_eval(self, rec: dict[str, Any]) -> bool:
        if self.cfg.eval_train and _finite(rec["test_ppl"]) and rec["test_ppl"] < self.best_state.get("ppl", math.inf):
            self.best_state.update(ppl=rec["test_ppl"],
                                   weights={k: v.detach().clone() for k, v in self.model.state_dict().items()})
        if self.ctx is not None:
            self.ctx.report({k: rec[k] for k in REPORTED})
        return stops(self.cfg, rec)


def run_mad(config: dict[str, Any] | MADRunConfig, ctx: Any = None, *, checkpointer=None,
            ckpt_every_epochs: int = 1) -> dict[str, Any]:
    """Train and evaluate one MAD run; returns a flat dict of metrics (always with `status`).

    `checkpointer` (grid.train.checkpoint: save/load) makes the run resumable: it is restored at
    start and saved every `ckpt_every_epochs` epochs. `eval_train` weights are not checkpointed.
    """
    cfg = config if isinstance(config, MADRunConfig) else MADRunConfig.model_validate(config)
    setting = cfg.mad_setting()
    device = resolve_device(cfg.device)
    t_start = time.perf_counter()
    with _SETUP_LOCK:  # packed runs share the process: global seeding + init must not interleave
        model, mcfg, (xtr, ytr), (xte, yte), gate = _setup(cfg, setting, device)
    n_params = sum(p.numel() for p in model.parameters())
    compiled = cfg.compile and device.type == "cuda"
    if compiled:  # dynamo compiles one frame at a time; graphed steps call it under EAGER_LOCK anyway

        compile_model(model)
    bs = cfg.batch_size
    get_batch, spe = batch_fn(xtr, ytr, cfg, device)
    optimizer = build_adamw(model, cfg.lr, cfg.weight_decay, no_decay=False)
    schedule = lr_schedule(cfg, spe)

    task = MADTask(cfg, model, get_batch, schedule, (xte, yte), spe, device, ctx)
    result = train(model, optimizer, task, max_steps=cfg.epochs * spe, eval_every=spe, precision=cfg.precision,
                   checkpointer=checkpointer, ckpt_every=spe * ckpt_every_epochs if checkpointer is not None else 0,
                   sync_every=spe, cuda_graph=cfg.cuda_graph)

    out = run_row(cfg, setting, mcfg, n_params=n_params, backends=model.backends, device=device, compiled=compiled,
                  gate=gate, result=result, steps_per_epoch=spe, eval_graph=task.graphed_eval)
    if out["nan"] is False:
        best_state = task.best_state
        if cfg.eval_train and "weights" in best_state:
            model.load_state_dict(best_state["weights"])
            model.eval()

            with torch.no_grad(), autocast_ctx(device, cfg.precision):
                tm = evaluate_split(model, xtr, ytr, bs)
            out.update(train_acc=tm["acc"], train_ppl=tm["ppl"], train_loss_eval=tm["loss"])
    out["run_wall_s"] = time.perf_counter() - t_start  # "wall_s" is the runner's column (whole trial)
    out["train_wall_s"] = result.wall_s
    return out
