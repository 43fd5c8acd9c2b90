"""Iso-parameter sizing: choose a mixer's width knobs so that a model matches a target.

Given a base ModelConfig, a target non-embedding parameter count and the mixer's documented
`size_knobs` (registry), try every combination of knob values (and optionally depth) and keep
the closest; accept it when within `tolerance` (default 2 %), refuse otherwise with the best
reachable value in the message. Counting uses meta-device models, so large targets are cheap.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from grid.models.accounting import account
from grid.models.config import ModelConfig
from grid.models.registry import get_mixer
from grid.models.stack import build_for_counting


@dataclass
class SizingResult:
    config: ModelConfig
    target: int
    achieved: int
    rel_error: float
    knobs: dict

    def report(self) -> str:
        knobs = ", ".join(f"{k}={v}" for k, v in self.knobs.items()) or "(defaults)"
        return (f"{self.config.mixer}: {knobs} -> {self.achieved:,} non-embedding params "
                f"(target {self.target:,}, {100 * self.rel_error:+.2f}%)")


class SizingError(ValueError):
    pass


def _non_embedding(cfg: ModelConfig) -> int:
    return account(build_for_counting(cfg)).non_embedding_params


def size_to_target(base: ModelConfig, target: int, tolerance: float = 0.02,
                   knobs: dict[str, tuple] | None = None, vary_depth: bool = False) -> SizingResult:
    """Search the knob grid (user-given `knobs` override the registry's `size_knobs`)."""
    if target <= 0:
        raise SizingError(f"target={target} must be a positive parameter count")
    spec = get_mixer(base.mixer)
    grid = dict(knobs if knobs is not None else spec.size_knobs)
    unknown = set(grid) - spec.kwargs_allowed()
    if unknown:
        raise SizingError(f"knobs {sorted(unknown)} are not kwargs of mixer {spec.name!r}; "
                          f"allowed: {sorted(spec.kwargs_allowed())}")
    depths = [base.n_layers]
    if vary_depth:
        depths = sorted({max(1, base.n_layers + dd) for dd in range(-base.n_layers // 2, base.n_layers // 2 + 1)})
    names = list(grid)
    # the documented defaults win when they are already within tolerance (no gratuitous reshaping)
    n0 = _non_embedding(base)
    if abs(n0 - target) / target <= tolerance and not vary_depth:
        return SizingResult(base, target, n0, (n0 - target) / target, {})
    best: SizingResult | None = None
    for depth in depths:
        for values in itertools.product(*(grid[n] for n in names)) if names else [()]:
            kw = {**base.mixer_kwargs, **dict(zip(names, values))}
            try:
                cfg = base.model_copy(update={"mixer_kwargs": kw, "n_layers": depth})
                cfg = ModelConfig.model_validate(cfg.model_dump())
                n = _non_embedding(cfg)
            except (ValueError, AssertionError, RuntimeError):
                continue  # an inconsistent combination (e.g. heads not dividing the width)
            err = (n - target) / target
            if best is None or abs(err) < abs(best.rel_error):
                chosen = dict(zip(names, values))
                if vary_depth:
                    chosen["n_layers"] = depth
                best = SizingResult(cfg, target, n, err, chosen)
    if best is None:
        raise SizingError(f"no valid combination of {names} for mixer {spec.name!r} at d_model={base.d_model}")
    if abs(best.rel_error) > tolerance:
        raise SizingError(f"cannot reach {target:,} non-embedding params within {tolerance:.0%} with knobs "
                          f"{grid}: closest is {best.report()}; change d_model/n_layers or pass other knob values")
    return best
