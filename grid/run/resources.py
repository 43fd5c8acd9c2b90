"""The resources policy: what one trial asks Ray for, and how it runs on what it gets.

Every suite asks here. Three ways to decide a trial's GPU share:

* **asked**: the suite or the user gave it (MAD's `--n-tasks-gpu k` -> 1/k; an LM grid's
  `resources.gpus_per_trial`): taken as asked;
* **auto, tiny model** (fewer than SHARE_BELOW_PARAMS non-embedding parameters): such a model
  cannot keep an H100/H200 busy (its kernels are launch-bound), so trials share a GPU:
  k = how many of its estimated peak memory fit in GPU_MEMORY_USABLE of the GPU, at most
  MAX_TRIALS_PER_GPU, rounded down to a power of two; the trial asks for 1/k GPU;
* **auto, otherwise**: one whole GPU (k > 1 GPUs run data-parallel: grid/lm/prepare_grid.py).

Kernel autotuning follows the share: a trial that shares a GPU takes Triton's first kernel config
that runs (LINGRID_AUTOTUNE=first, grid/models/autotune.py) because timing candidates while other
processes run kernels on the same GPU measures the neighbours, and for a tiny model minutes of
tuning cost more than its whole run. A LINGRID_AUTOTUNE set by the user always wins. Compiled
kernels and tuned choices are cached per host (grid/paths.py: use_host_kernel_cache), so a
second run compiles nothing.

Ray does not isolate GPU memory: the memory estimate is deliberately generous (fp32 weights,
gradients and AdamW state, activations of one micro-batch, logits, and a fixed per-process
overhead for the CUDA context and kernel workspaces).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from grid.run.spec import Resources

SHARE_BELOW_PARAMS = 20_000_000  # non-embedding parameters: below, a model cannot fill an H100/H200
MAX_TRIALS_PER_GPU = 8
GPU_MEMORY_USABLE = 0.8          # fraction of a GPU's memory the sharing trials may fill together
PROCESS_OVERHEAD_GIB = 1.5       # CUDA context, allocator slack, Triton/fla workspaces of one worker process
ACTIVATION_BYTES = 40            # per token x d_model x layer (bf16 activations kept for backward, generous)
UNKNOWN_GPU_MEMORY_GIB = 40.0    # a remote cluster's GPU memory, when the driver cannot see it
AUTOTUNE_ENV = "LINGRID_AUTOTUNE"


class ResourceRequest(BaseModel):
    """What a suite's file asks per trial (an LM grid's `resources:` block); `decide` turns it into Resources."""

    model_config = ConfigDict(extra="forbid")

    gpus_per_trial: float | None = Field(None, ge=0, description="None: decided by the policy (1, or a share "
                                         "for a tiny model) when the cluster has GPUs, else 0")
    cpus_per_trial: float = Field(1, gt=0)


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_cpus(cpus_per_trial) -> None:
    if isinstance(cpus_per_trial, bool) or not isinstance(cpus_per_trial, (int, float)) \
            or not math.isfinite(cpus_per_trial) or cpus_per_trial <= 0:
        raise ValueError(f"cpus_per_trial must be a number > 0, got {cpus_per_trial!r}")


def trial_resources(n_gpu_available: int, n_tasks_per_gpu: int = 1, cpus_per_trial: float = 1.0) -> Resources:
    """Resources for one trial when `n_tasks_per_gpu` trials share each GPU (asked, e.g. MAD's --n-tasks-gpu).

    gpu = 1 / n_tasks_per_gpu when GPUs exist (e.g. 4 MAD trials per H100 -> 0.25), else 0 (CPU run).
    """
    _check_int("n_gpu_available", n_gpu_available, 0)
    _check_int("n_tasks_per_gpu (trials sharing one GPU)", n_tasks_per_gpu, 1)
    _check_cpus(cpus_per_trial)
    gpu = 1.0 / n_tasks_per_gpu if n_gpu_available > 0 else 0.0
    return Resources(cpu=float(cpus_per_trial), gpu=gpu)


def training_memory_gib(*, total_params: int, d_model: int, n_layers: int, vocab_size: int,
                        micro_batch_tokens: int) -> float:
    """A generous estimate of one training process's peak GPU memory (GiB); see the module docstring."""
    state = 16.0 * total_params  # fp32 weights + gradients + AdamW's two moments
    activations = float(ACTIVATION_BYTES) * micro_batch_tokens * d_model * n_layers
    logits = 12.0 * micro_batch_tokens * vocab_size  # fp32 logits, their gradient, the autocast copy
    return (state + activations + logits) / 2**30 + PROCESS_OVERHEAD_GIB


def trials_per_gpu(memory_gib: float, gpu_memory_gib: float) -> int:
    """How many trials of `memory_gib` share one GPU: a power of two in [1, MAX_TRIALS_PER_GPU]."""
    fit = int(GPU_MEMORY_USABLE * gpu_memory_gib // max(memory_gib, 1e-9))
    k = 1
    while k * 2 <= min(fit, MAX_TRIALS_PER_GPU):
        k *= 2
    return k


@dataclass(frozen=True)
class Decision:
    """A trial's GPU share and the environment it runs with (TrialSpec.resources / .env)."""

    gpus: float                 # GPUs per trial: 0 (CPU), a fraction (shared), 1, or k > 1 (data-parallel)
    env: dict[str, str]         # e.g. {"LINGRID_AUTOTUNE": "first"} for a trial that shares a GPU
    why: str                    # one line for the run's notes

    @property
    def shared(self) -> bool:
        return 0 < self.gpus < 1


def decide(n_gpu: int, *, asked: float | None = None, non_embedding_params: int | None = None,
           memory_gib: float | None = None, gpu_memory_gib: float | None = None,
           user_autotune: str | None = None) -> Decision:
    """The policy of the module docstring for one trial on a cluster with `n_gpu` GPUs.

    `asked`: GPUs per trial given by the suite or the user (None: decide from the model).
    `user_autotune`: the LINGRID_AUTOTUNE the user set (None: the policy picks per trial)."""
    _check_int("n_gpu", n_gpu, 0)
    if n_gpu == 0:
        return Decision(0.0, {}, "no GPU: CPU trials")
    if asked is not None:
        gpus, why = float(asked), f"{asked:g} GPU per trial (asked)"
    elif non_embedding_params is None or memory_gib is None:
        gpus, why = 1.0, "one GPU per trial (model size unknown)"
    elif non_embedding_params >= SHARE_BELOW_PARAMS:
        gpus, why = 1.0, (f"one GPU per trial ({non_embedding_params / 1e6:.0f}M non-embedding parameters, "
                          f">= {SHARE_BELOW_PARAMS / 1e6:.0f}M)")
    else:
        mem = gpu_memory_gib if gpu_memory_gib else UNKNOWN_GPU_MEMORY_GIB
        k = trials_per_gpu(memory_gib, mem)
        gpus = 1.0 / k
        why = (f"{k} trials per GPU (tiny model: {non_embedding_params / 1e6:.2g}M non-embedding parameters, "
               f"~{memory_gib:.1f} GiB peak each of {mem:.0f} GiB)")
    env = {}
    if 0 < gpus < 1 and not user_autotune:
        env[AUTOTUNE_ENV] = "first"
        why += "; kernels: first config that runs (a shared GPU cannot time candidates)"
    return Decision(gpus, env, why)


def check_fits(resources: Resources, cluster: dict[str, float]) -> None:
    """Fail before scheduling when one trial asks for more than the whole cluster has.

    `cluster` is `ray.cluster_resources()` (keys "CPU", "GPU"). Tune would otherwise wait forever.
    """
    for key, need in resources.bundle().items():
        have = float(cluster.get(key, 0.0))
        if need > have + 1e-9:
            raise ValueError(
                f"a trial asks for {key}={need:g} but the Ray cluster has {key}={have:g} in total; "
                f"lower the trial's resources or start Ray with more (num_{key.lower()}s=...)"
            )


__all__ = ["Decision", "ResourceRequest", "check_fits", "decide", "trial_resources", "training_memory_gib", "trials_per_gpu"]
