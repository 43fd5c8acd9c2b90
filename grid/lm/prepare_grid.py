"""From a grid file to runnable trials: its data spec, its data identity, TrialSpecs with resources.

* `data_spec_path(spec, grid_path)`: the grid's `data:` file (relative to the cwd, else to the grid
  file's folder, else to the repository).
* `data_identity(...)`: vocabulary size and data hash for `plan` without preparing anything: the
  prepared manifest's content_hash when the data is prepared, else the data spec's hash (trial keys
  are then provisional: they change once the shards exist).
* `prepare_data(...)`: builds or reuses the token shards (idempotent).
* `lm_trial_specs(...)`: one `TrialSpec` per expanded trial (trainable grid.lm.trial:run_lm) and the
  Tune concurrency limit. Its GPU share comes from the resources policy (grid/run/resources.py:
  tiny models share a GPU). A trial asking for k > 1 GPUs runs data-parallel (grid/lm/ddp.py): its
  Tune trial holds one CPU and the k GPUs go to its Ray Train workers; then at most GPUs // k such
  trials run at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grid import paths
from grid.data import prepare
from grid.data.manifest import read_manifest
from grid.data.shards import MANIFEST
from grid.data.spec import DataSpecError, load_data_spec
from grid.data.tokenizer import HFTokenizer, TokenizerError
from grid.keys import device_class
from grid.lm.gridspec import GridError, GridSpec, LMTrial, RUNTIME_FIELDS, SUITE
from grid.paths import benchmark_root
from grid.run.resources import AUTOTUNE_ENV, decide, training_memory_gib
from grid.run.spec import Resources, Work, make_trial

# Lazy here: json, os (one code path)

REPO = paths.REPO
TRAINABLE = "grid.lm.trial:run_lm"


@dataclass
class DataIdentity:
    spec_path: Path
    name: str
    vocab_size: int
    data_hash: str
    prepared: bool
    dir: str
    note: str = ""


def data_spec_path(spec: GridSpec, grid_path: str | Path | None = None) -> Path:
    p = Path(spec.data)
    candidates = [p] if p.is_absolute() else [p, *([Path(grid_path).parent / p] if grid_path else []), REPO / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise GridError(f"data: data spec {spec.data!r} not found (looked in: {', '.join(str(c) for c in candidates)})")


def grid_data_spec(spec: GridSpec, grid_path: str | Path | None = None):
    """The grid's validated DataSpec (GridError naming the bad field otherwise)."""

    try:
        return load_data_spec(data_spec_path(spec, grid_path))
    except DataSpecError as exc:
        raise GridError(f"data: {exc}") from None


def data_identity(spec: GridSpec, grid_path: str | Path | None = None, data_dir: str | Path | None = None,
                  vocab_size: int | None = None) -> DataIdentity:
    """Vocabulary and data hash of a grid's data, without preparing it (see module docstring).

    `vocab_size` overrides the vocabulary when the data is not prepared (no tokenizer is loaded)."""

    path = data_spec_path(spec, grid_path)
    dspec = grid_data_spec(spec, grid_path)
    out = Path(data_dir if data_dir is not None else dspec.out_dir)
    manifest = read_manifest(out)
    if manifest is not None and manifest.get("spec_hash") == dspec.spec_hash():
        return DataIdentity(path, dspec.name, int(manifest["tokenizer"]["vocab_size"]), manifest["content_hash"],
                            True, manifest["dir"], "data prepared: trial keys are final")
    tk = dspec.tokenizer
    note = "data not prepared: trial keys use the data spec hash and change once it is prepared"
    if vocab_size is not None:
        vocab = int(vocab_size)
        note += f"; vocab {vocab} given on the command line"
    elif tk.kind == "bytes":
        vocab = 257
    elif tk.kind == "bpe":
        vocab = int(tk.vocab_size)
        note += f"; BPE vocab {vocab} is the target (a small corpus may learn fewer)"
    elif (known := prepared_vocab(tk.model_dump(mode="json"))) is not None:
        vocab, where = known
        note += f"; vocab {vocab} from the prepared data in {where} (same tokenizer)"
    else:
        try:
            vocab = HFTokenizer(tk.name_or_path).vocab_size
        except TokenizerError as exc:
            raise GridError(f"data: the vocabulary size of {path} needs its tokenizer, which could not be "
                            f"loaded (plan --vocab-size N skips it): {exc}") from None
    return DataIdentity(path, dspec.name, vocab, "spec-" + dspec.spec_hash(), False, str(out.resolve()), note)


def prepared_manifests() -> list[Path]:
    """Manifests of the data prepared on this machine (<benchmark root>/data/lm/*/manifest.json)."""

    return sorted((benchmark_root() / "data" / "lm").glob(f"*/{MANIFEST}"))


def prepared_vocab(tokenizer: dict[str, Any]) -> tuple[int, str] | None:
    """(vocab size, data dir) from any prepared data set that used the same pretrained tokenizer: its
    manifest records the vocabulary, so planning needs neither transformers nor the network."""
    import json  # noqa: PLC0415

    if tokenizer.get("kind") != "hf":
        return None
    for path in prepared_manifests():
        try:
            tk = json.loads(path.read_text()).get("tokenizer") or {}
        except (OSError, ValueError):
            continue
        if tk.get("kind") == "hf" and tk.get("name_or_path") == tokenizer.get("name_or_path") and tk.get("vocab_size"):
            return int(tk["vocab_size"]), str(path.parent)
    return None


def prepare_data(spec: GridSpec, grid_path: str | Path | None = None, data_dir: str | Path | None = None,
                 verbose: bool = True) -> dict[str, Any]:
    """Build or reuse the grid's token shards; returns the manifest (with "dir")."""

    return prepare(grid_data_spec(spec, grid_path), out_dir=data_dir, verbose=verbose)


def columns_of(t: LMTrial, spec: GridSpec) -> dict[str, Any]:
    """Descriptive store columns of an LM trial (model_id is the architecture label)."""
    return {"model_id": t.arch, "mixer": t.mixer, "hybrid": t.hybrid, "scale": t.scale, "seed": t.seed,
            "lr": float(t.train["lr"]), "wd": float(spec.recipe.weight_decay)}


def trial_work(t: LMTrial):
    """Planned steps and tokens of an LM trial (the progress display's ETA)."""

    steps = int(t.train["steps"])
    return Work(steps=steps, tokens=steps * int(t.train["batch_size"]) * int(t.train["seq_len"]))


def trial_memory_gib(t: LMTrial) -> float | None:
    """Estimated peak GPU memory of one LM trial (None when the trial was expanded without counts)."""

    if "total_params" not in t.counts:
        return None
    return training_memory_gib(total_params=int(t.counts["total_params"]), d_model=t.model.d_model,
                               n_layers=t.model.n_layers, vocab_size=t.model.vocab_size,
                               micro_batch_tokens=int(t.train["micro_batch_size"]) * int(t.train["seq_len"]))


def lm_trial_specs(trials: list[LMTrial], spec: GridSpec, data_dir: str | Path, *, n_gpu: int,
                   gpu_memory_gib: float | None = None, data_spec: dict[str, Any] | None = None
                   ) -> tuple[list, int | None, list[str]]:
    """(TrialSpecs, max_concurrent or None, notes) for running `trials` with `n_gpu` GPUs in the cluster.

    Each trial's GPU share comes from the resources policy (grid/run/resources.py: tiny models share
    a GPU, `resources.gpus_per_trial` overrides); `gpu_memory_gib` is one GPU's memory (None: unknown).
    With `data_spec` (a DataSpec dump), each trial prepares the shards on the node it runs on
    (grid/data/cache.py) instead of reading `data_dir`: a cluster without shared storage."""
    import os  # noqa: PLC0415

    res = spec.resources
    notes: list[str] = []
    max_concurrent = None
    if n_gpu <= 0 and res.gpus_per_trial:
        notes.append(f"no GPU: resources.gpus_per_trial={res.gpus_per_trial:g} ignored, trials run on CPU, "
                     "one process each")
    out = []
    device = device_class(max(n_gpu, 0))  # with GPUs every trial gets some (a share, one, or k data-parallel)
    for t in trials:
        t = t.on_device(device)
        extras: dict[str, Any] = {"data_dir": str(Path(data_dir).resolve())}
        if data_spec is not None:
            extras.update(data_local=True, data_spec=data_spec)
        nonemb = t.counts.get("non_embedding_params")
        d = decide(max(n_gpu, 0), asked=res.gpus_per_trial, memory_gib=trial_memory_gib(t),
                   non_embedding_params=None if nonemb is None else int(nonemb), gpu_memory_gib=gpu_memory_gib,
                   user_autotune=os.environ.get(AUTOTUNE_ENV))
        if d.gpus <= 1:
            resources = Resources(cpu=res.cpus_per_trial, gpu=d.gpus)
        else:
            if not d.gpus.is_integer():
                raise GridError(f"resources.gpus_per_trial={d.gpus:g}: above 1 GPU a trial needs a whole number of GPUs")
            k = int(d.gpus)
            if k > n_gpu:
                raise GridError(f"resources.gpus_per_trial={k} but the cluster has {n_gpu} GPU(s); "
                                f"allowed: at most {n_gpu}")
            resources = Resources(cpu=1, gpu=0)  # the Tune trial is the driver; its Train workers hold the GPUs
            extras["ddp"] = {"workers": k, "use_gpu": True, "cpus_per_worker": res.cpus_per_trial}
            max_concurrent = max(1, n_gpu // k)
            d = type(d)(d.gpus, d.env, f"{k} GPUs per trial: data-parallel through Ray Train, at most "
                                       f"{max_concurrent} trial(s) at a time")
        if n_gpu > 0 and d.why not in notes:
            notes.append(d.why)
        assert set(extras) <= set(RUNTIME_FIELDS), extras
        out.append(make_trial(t.config, runtime=extras, suite=SUITE, grid=spec.name, trainable=TRAINABLE,
                              columns=columns_of(t, spec), resources=resources, env=d.env, work=trial_work(t)))
    return out, max_concurrent, notes


__all__ = ["DataIdentity", "data_identity", "data_spec_path", "grid_data_spec", "lm_trial_specs", "prepare_data",
           "trial_memory_gib", "trial_work"]
