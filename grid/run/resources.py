"""Per-trial resource requests (what one trial asks Ray for)."""
from __future__ import annotations

import math

from grid.run.spec import Resources


def trial_resources(n_gpu_available: int, n_tasks_per_gpu: int = 1, cpus_per_trial: float = 1.0) -> Resources:
    """Resources for one trial when `n_tasks_per_gpu` trials share each GPU.

    gpu = 1 / n_tasks_per_gpu when GPUs exist (e.g. 4 MAD trials per H100 -> 0.25), else 0 (CPU run).
    Ray does not isolate GPU memory: pick n_tasks_per_gpu from measured peak memory.
    """
    if isinstance(n_gpu_available, bool) or not isinstance(n_gpu_available, int) or n_gpu_available < 0:
        raise ValueError(f"n_gpu_available must be an int >= 0, got {n_gpu_available!r}")
    if isinstance(n_tasks_per_gpu, bool) or not isinstance(n_tasks_per_gpu, int) or n_tasks_per_gpu < 1:
        raise ValueError(f"n_tasks_per_gpu must be an int >= 1 (trials sharing one GPU), got {n_tasks_per_gpu!r}")
    if isinstance(cpus_per_trial, bool) or not isinstance(cpus_per_trial, (int, float)) or not math.isfinite(cpus_per_trial) or cpus_per_trial <= 0:
        raise ValueError(f"cpus_per_trial must be a number > 0, got {cpus_per_trial!r}")
    gpu = 1.0 / n_tasks_per_gpu if n_gpu_available > 0 else 0.0
    return Resources(cpu=float(cpus_per_trial), gpu=gpu)


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
