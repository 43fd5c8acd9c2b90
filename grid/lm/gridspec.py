"""LM grid specs (configs/grids/*.yaml): architectures x hybrid ratios x scales x seeds, one recipe, one data block.

`expand(spec)` turns a grid into an explicit list of trials. Softmax attention itself is never
hybridised (it only gets "pure"); a hybrid that a scale's depth cannot realise is an error naming
the trial. Each trial's `config` holds everything that can change its result (model, resolved
recipe, data hash, seed, environment profile, the device class it runs on, and the `evals` block when
the grid has one): the hashed block of grid.keys.trial_key. The grid name is not part of it, so the
same trial in two grids is run once.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grid.cliargs import read_mapping, validation_message
from grid.env.profiles import load_profile
from grid.keys import DEVICE_CLASSES, trial_key
from grid.lm.evals.spec import EvalsSpec
from grid.lm.mfu import peak_bf16_flops
from grid.lm.scales import SCALES_FILE, Scale, get_scale
from grid.models.accounting import account
from grid.models.config import ModelConfig
from grid.models.ffn import FFNConfig
from grid.models.registry import get_mixer
from grid.models.stack import build_for_counting
from grid.run.resources import ResourceRequest

SUITE = "lm"
# the runtime block of an LM trial's config: where the shards are and how the trial is spread over workers
# (grid/lm/trial.py reads them); never hashed. Everything else in the config is the hashed block.
RUNTIME_FIELDS = ("data_dir", "data_local", "data_spec", "ddp", "ddp_storage")
ASSUMED_MFU = 0.4  # for GPU-hour estimates in `plan` only
PLAN_GPU = "H100 SXM"  # the GPU whose peak (grid/lm/mfu.py) `plan` estimates GPU-hours with


class GridError(ValueError):
    pass


class Recipe(BaseModel):
    """One recipe for every trial of a grid (fairness: only the mixer, ratio and scale change)."""

    model_config = ConfigDict(extra="forbid")

    optimizer: Literal["adamw"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    decay_norms_biases_embeddings: bool = False
    lr: float | None = Field(None, gt=0, description="peak lr; None = the scale's")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to this fraction of peak")
    warmup_steps: int | None = Field(None, ge=0, description="None = the scale's")
    grad_clip: float = Field(1.0, gt=0)
    precision: Literal["bf16", "fp32"] = "bf16"
    tokens: int | None = Field(None, gt=0, description="training tokens; None = the scale's budget")
    micro_batch_size: int | None = Field(None, gt=0, description="sequences per forward; accumulation fills the batch")
    eval_every: int = Field(50, gt=0, description="steps between validation evaluations")
    eval_batches: int = Field(8, gt=0)
    ckpt_every: int = Field(200, gt=0)
    divergence_factor: float = Field(4.0, gt=1, description="loss above factor x running minimum = diverged")
    tie_embeddings: bool = False
    compile: bool = Field(False, description="torch.compile the model's forward on GPU (in place: parameter names "
                                             "and checkpoints unchanged); ignored on CPU")


class ArchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9.\-]+$", description="label in tables (no '_', as mad-lab ids)")
    mixer: str
    mixer_kwargs: dict[str, Any] = Field(default_factory=dict)
    hybrid: list[str | list[int]] | None = Field(None, description="overrides the grid's hybrid list")


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9.\-]+$")
    description: str = ""
    suite: Literal["lm"] = "lm"
    data: str = Field(description="path to a data spec YAML (python -m grid data prepare)")
    env_profile: str | None = Field(None, description="configs/env/<name>.txt checked on every worker")
    architectures: list[ArchSpec] = Field(min_length=1)
    hybrid: list[str | list[int]] = Field(default_factory=lambda: ["pure"], min_length=1)
    scales: list[str] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    recipe: Recipe = Field(default_factory=Recipe)
    evals: EvalsSpec | None = Field(None, description="recall evaluations every trial runs at its end "
                                    "(grid/lm/evals); none when absent")
    resources: ResourceRequest = Field(default_factory=ResourceRequest)

    @field_validator("scales")
    @classmethod
    def _known_scales(cls, scales: list[str]) -> list[str]:
        for s in scales:
            get_scale(s)  # raises naming the allowed scales
        return scales

    @model_validator(mode="after")
    def _check(self):
        names = [a.name for a in self.architectures]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"architectures[].name must be unique; repeated: {dup}")
        if self.env_profile:
            load_profile(self.env_profile).check_architectures(a.mixer for a in self.architectures)
        return self


@dataclass
class LMTrial:
    arch: str
    mixer: str
    hybrid: str
    scale: str
    seed: int
    model: ModelConfig
    train: dict[str, Any]  # resolved recipe: lr, steps, batch, seq_len, accumulation, ...
    config: dict[str, Any]  # the hashed block: what trial_key hashes
    trial_key: str
    counts: dict[str, Any] = field(default_factory=dict)

    def on_device(self, device: str) -> "LMTrial":
        """This trial planned for device class `device` (cpu | cuda): its hashed block and key say so."""
        if device not in DEVICE_CLASSES:
            raise ValueError(f"device={device!r} is not allowed; allowed: {', '.join(DEVICE_CLASSES)}")
        config = {**self.config, "device": device}
        return replace(self, config=config, trial_key=trial_key(SUITE, config))


def load_grid(path: str | Path) -> GridSpec:
    path = Path(path)
    raw = read_mapping(path, "grid file", "name, data, architectures, scales, ...", GridError)
    try:
        spec = GridSpec.model_validate(raw)
    except ValidationError as exc:
        raise GridError(_format(exc, path)) from None
    except ValueError as exc:
        raise GridError(f"invalid grid {path}: {exc}") from None
    return spec


def _format(exc: ValidationError, path) -> str:
    return validation_message(exc, f"invalid grid {path}")


def _check_kwarg_types(arch: ArchSpec, spec) -> None:
    """Each mixer_kwargs value has the type of the mixer's default (a name alone is checked by the registry)."""
    for key, value in arch.mixer_kwargs.items():
        default = spec.default_kwargs.get(key)
        if default is None or value is None:
            continue
        want: tuple[type, ...]
        if isinstance(default, bool):
            want = (bool,)
        elif isinstance(default, int):
            want = (int,)
        elif isinstance(default, float):
            want = (int, float)
        else:
            want = (type(default),)
        if not isinstance(value, want) or (isinstance(value, bool) and bool not in want):
            raise GridError(f"architectures[{arch.name}].mixer_kwargs.{key}={value!r} is not allowed; allowed: "
                            f"{' or '.join(t.__name__ for t in want)} (default {default!r} for mixer {arch.mixer!r})")


def _hybrid_label(h) -> str:
    return h if isinstance(h, str) else "attn@" + ",".join(map(str, h))


def resolve_train(recipe: Recipe, scale: Scale) -> dict[str, Any]:
    tokens = recipe.tokens or scale.tokens
    batch = scale.batch_size
    micro = min(recipe.micro_batch_size or batch, batch)
    if batch % micro:
        raise GridError(f"recipe.micro_batch_size={micro} must divide the batch of scale {scale.name} ({batch})")
    return dict(lr=recipe.lr or scale.lr, warmup_steps=scale.warmup_steps if recipe.warmup_steps is None else
                recipe.warmup_steps, tokens=tokens, seq_len=scale.seq_len, batch_size=batch, micro_batch_size=micro,
                grad_accum=batch // micro, steps=max(1, tokens // scale.batch_tokens))


def model_for(arch: ArchSpec, hybrid, scale: Scale, vocab_size: int, recipe: Recipe) -> ModelConfig:
    kwargs = dict(arch.mixer_kwargs)
    attn_kwargs = {}
    if arch.mixer == "attention":
        kwargs.setdefault("num_heads", scale.num_heads)
    elif hybrid != "pure":
        attn_kwargs = {"num_heads": scale.num_heads}
    _check_kwarg_types(arch, get_mixer(arch.mixer, "architectures[].mixer"))
    return ModelConfig(vocab_size=vocab_size, d_model=scale.d_model, n_layers=scale.n_layers, mixer=arch.mixer,
                       mixer_kwargs=kwargs, hybrid=hybrid, attn_kwargs=attn_kwargs,
                       ffn=FFNConfig(kind="swiglu", intermediate_size=scale.intermediate_size),
                       tie_embeddings=recipe.tie_embeddings, context=scale.seq_len)


def expand(spec: GridSpec, vocab_size: int, data_hash: str, count: bool = True, device: str = "cpu") -> list[LMTrial]:
    """The explicit trial list (deterministic order: architecture, hybrid, scale, seed), planned for device
    class `device` (LMTrial.on_device moves a trial to another)."""

    trials, seen = [], set()
    if spec.evals is not None:
        try:
            spec.evals.check_vocab(vocab_size)
        except ValueError as exc:
            raise GridError(str(exc)) from None
    for arch in spec.architectures:
        hybrids = arch.hybrid if arch.hybrid is not None else spec.hybrid
        if not get_mixer(arch.mixer, "architectures[].mixer").hybrid_ok:
            hybrids = ["pure"]  # softmax attention is the baseline, never hybridised
        for hybrid in hybrids:
            for scale_name in spec.scales:
                scale = get_scale(scale_name)
                where = f"trial {arch.name} / hybrid {_hybrid_label(hybrid)} / scale {scale_name}"
                try:
                    cfg = model_for(arch, hybrid, scale, vocab_size, spec.recipe)
                    train = resolve_train(spec.recipe, scale)
                except ValidationError as exc:
                    msgs = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                    raise GridError(f"{where}: {msgs}") from None
                except GridError:
                    raise
                except ValueError as exc:
                    raise GridError(f"{where}: {exc}") from None
                try:
                    counts = account(build_for_counting(cfg)).summary() if count else {}
                except Exception as exc:  # noqa: BLE001 - a layer that cannot be built: a config error, not a crash
                    raise GridError(f"{where}: the model cannot be built with architectures[{arch.name}].mixer_kwargs "
                                    f"{arch.mixer_kwargs}: {type(exc).__name__}: {' '.join(str(exc).split())}") from None
                for seed in spec.seeds:
                    config = {"suite": SUITE, "model": cfg.model_dump(mode="json"), "train": train,
                              "recipe": spec.recipe.model_dump(mode="json"), "data_hash": data_hash,
                              "seed": seed, "env_profile": spec.env_profile, "device": device}
                    if spec.evals is not None:  # absent otherwise
                        config["evals"] = spec.evals.model_dump(mode="json")
                    key = trial_key(SUITE, config)
                    if key in seen:
                        continue
                    seen.add(key)
                    trials.append(LMTrial(arch.name, arch.mixer, _hybrid_label(hybrid), scale_name, seed, cfg,
                                          train, config, key, counts))
    return trials


def estimate(trial: LMTrial) -> dict[str, float]:
    """Training FLOPs (3 x forward per token x tokens) and GPU-hours at ASSUMED_MFU on an H100."""
    flops = trial.counts.get("train_flops_per_token", 0.0) * trial.train["tokens"]
    return {"train_flops": flops, "gpu_hours": flops / (peak_bf16_flops(PLAN_GPU) * ASSUMED_MFU) / 3600}


__all__ = ["RUNTIME_FIELDS", "SCALES_FILE", "SUITE", "ArchSpec", "GridError", "GridSpec", "LMTrial", "Recipe", "estimate",
           "expand", "load_grid", "model_for", "resolve_train"]
