"""Deterministic build errors found before Ray starts: a mixer whose backend cannot run on this machine.

A trial that asks for a mixer this machine cannot build fails the same way on every attempt; it
must be refused before any worker starts (and `plan` says so), not discovered and retried by Tune.
`backend_problems(models)` resolves every layer's backend the way the model builder will
(grid.models.stack.resolve_backend) and returns one line per (mixer, backend) that cannot run
here. It only answers for the local machine: on a remote cluster the workers decide (and a
deterministic error there ends the trial without retries: grid/run/trainable.py, NOT_RETRIED).
"""
from __future__ import annotations

from typing import Any, Iterable

# Lazy here: grid.models.errors, grid.models.registry, grid.models.stack (they import torch or Ray)


def _layer_mixers(model: Any) -> set[str]:
    """The registry names of the mixers a model config builds (a hybrid adds softmax attention)."""
    hybrid = getattr(model, "hybrid", "pure")
    names = {model.mixer}
    if hybrid not in ("pure", None, [], ()):
        names.add("attention")
    return names


def backend_problems(models: Iterable[Any]) -> list[str]:
    """One message per (mixer, wanted backend) of `models` (ModelConfig objects) that cannot run here."""
    from grid.models.errors import BackendUnavailable, ConfigError  # noqa: PLC0415
    from grid.models.registry import get_mixer  # noqa: PLC0415
    from grid.models.stack import resolve_backend  # noqa: PLC0415

    problems: dict[tuple[str, str], str] = {}
    for model in models:
        wanted = getattr(model, "backend", "auto") or "auto"
        for name in sorted(_layer_mixers(model)):
            if (name, wanted) in problems:
                continue
            try:
                spec = get_mixer(name)
                backend = resolve_backend(spec, wanted)
                if backend == "reference" and spec.reference is None:
                    raise BackendUnavailable(f"mixer {name!r} has no reference backend: {spec.reference_unavailable}")
                if backend == "fused":
                    from grid.models.registry import fused_status  # noqa: PLC0415

                    ok, why = fused_status(spec)
                    if not ok:
                        raise BackendUnavailable(f"mixer {name!r}: fused backend unavailable here: {why}")
            except (BackendUnavailable, ConfigError) as exc:
                problems[(name, wanted)] = f"backend={wanted}: {exc}"
    return list(problems.values())


__all__ = ["backend_problems"]
