"""MAD sweep files: `python -m grid run SWEEP.yaml [flags]` (configs/mad/sweeps/*.yaml).

A sweep file is the flags of `python -m evals.mad.mad_eval_<arch>` written down (`suite: mad` says
whose file it is); the one MAD command (evals/mad/run.py: `main`) runs it, so a file and the same
flags on the command line make the same trials. Flags given after the file override its fields.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grid.cliargs import fail, read_mapping, validation_message

# Lazy here: evals.mad.run (they import torch or Ray)


class Sweep(BaseModel):
    """One MAD sweep: the architecture and the mad_eval flags that differ from their defaults."""

    model_config = ConfigDict(extra="forbid")

    suite: Literal["mad"] = "mad"
    arch: str = Field(description="architecture name in configs/mad/architectures.yaml")
    model_id: str | None = None
    tasks: list[str] | None = Field(None, min_length=1)
    settings: Literal["baseline", "all"] | None = None
    only: list[str] | None = Field(None, min_length=1)
    protocol: str | None = None
    epochs: int | None = Field(None, ge=1)
    max_train_examples: int | None = Field(None, ge=1)
    lrs: list[float] | None = Field(None, min_length=1)
    wds: list[float] | None = Field(None, min_length=1)
    backend: Literal["auto", "fused", "reference"] | None = None
    n_gpu: int | None = Field(None, ge=0)
    n_tasks_gpu: int | None = Field(None, ge=1)
    pack: str | int | None = None
    batch: Literal["on", "off"] | None = None
    compile: Literal["on", "off"] | None = None
    cuda_graph: Literal["on", "off"] | None = None

    def flags(self) -> list[str]:
        """The sweep as mad_eval flags (the command checks their values as it checks typed flags)."""
        out = ["--arch", self.arch]
        for name, value in self.model_dump(exclude={"suite", "arch"}, exclude_none=True).items():
            flag = "--" + name.replace("_", "-")
            out += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
        return out


def load_sweep(path: str | Path) -> Sweep:
    """The sweep of file `path`; ValueError (one line: field, value, what is allowed) when it is not one."""
    raw = read_mapping(path, "sweep file", "suite, arch, ...")
    try:
        return Sweep.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(validation_message(exc, str(path))) from None


def run_sweep_file(path: str, argv: list[str]) -> int:
    """`python -m grid run SWEEP.yaml [flags]`: `argv` is the command line with the file in it."""
    from evals.mad.run import main  # noqa: PLC0415  (the MAD command imports torch and the model layers)

    try:
        sweep = load_sweep(path)
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    rest = list(argv)
    rest.remove(path)
    return main([*sweep.flags(), *rest])


__all__ = ["Sweep", "load_sweep", "run_sweep_file"]
