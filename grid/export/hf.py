"""Write a trained LM as a transformers model folder: config.json, model.safetensors, tokenizer files.

Two formats (`export_model(..., fmt)`):

* `fla`: fla's own model class (GLAForCausalLM, DeltaNetForCausalLM, GatedDeltaNetForCausalLM,
  TransformerForCausalLM; hybrids through fla's `attn` config), where the model maps exactly
  (grid/export/fla_map.py). Load with `import fla` first (it registers its classes with
  transformers), then `AutoModelForCausalLM.from_pretrained(folder)`. fla's classes run its Triton
  kernels (a GPU, or Triton's CPU interpreter), and fla's softmax attention needs flash-attn.
* `lingrid`: our own stack behind `trust_remote_code` (grid/export/modeling_lingrid.py is copied
  into the folder): `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` with
  lingrid importable. Any architecture; runs on CPU (reference mixers) and GPU (fused).
* `auto` (the default): fla where the model maps, lingrid otherwise (the reason is returned).

The weights are written directly (safetensors, fp32 as trained; a tied head is stored once), so
writing needs neither a GPU nor fla's kernels. `lingrid_export.json` records where the model came from.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grid.data import read_manifest
from grid.export.fla_map import Unmappable, fla_config, fla_state_dict
from grid.export.locate import ExportError, load_trained
from grid.export.tokenizer import hf_tokenizer
from grid.models.config import ModelConfig

# Lazy here: fla (heavy: never at import time on the driver); safetensors (optional or slow to import: only the paths
#   that use them); grid.export.modeling_lingrid (they import torch or Ray)

FORMATS = ("auto", "fla", "lingrid")
MODELING_FILE = Path(__file__).with_name("modeling_lingrid.py")
WEIGHTS = "model.safetensors"
PROVENANCE = "lingrid_export.json"


@dataclass
class Exported:
    out_dir: Path
    format: str  # fla | lingrid
    model_class: str
    note: str = ""  # why `auto` chose lingrid


def _save_weights(state: dict[str, Any], path: Path, drop: set[str]) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if k not in drop}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _write_fla(cfg: ModelConfig, state: dict[str, Any], out: Path, common: dict[str, Any]) -> str:
    import fla.models  # noqa: PLC0415  (registers fla's classes; only this format imports fla)

    model_class, config_class, fields = fla_config(cfg)
    config = getattr(fla.models, config_class)(**fields, **common)
    config.architectures = [model_class]
    config.save_pretrained(str(out))
    _save_weights(fla_state_dict(state), out / WEIGHTS, {"lm_head.weight"} if cfg.tie_embeddings else set())
    return model_class


def _write_lingrid(cfg: ModelConfig, state: dict[str, Any], out: Path, common: dict[str, Any]) -> str:
    from grid.export.modeling_lingrid import LingridConfig  # noqa: PLC0415

    config = LingridConfig(lingrid_model=cfg.model_dump(mode="json"), **common)
    config.architectures = ["LingridForCausalLM"]
    config.auto_map = {"AutoConfig": "modeling_lingrid.LingridConfig",
                       "AutoModelForCausalLM": "modeling_lingrid.LingridForCausalLM"}
    config.save_pretrained(str(out))
    shutil.copyfile(MODELING_FILE, out / MODELING_FILE.name)
    prefixed = {f"lm.{k}": v for k, v in state.items()}
    _save_weights(prefixed, out / WEIGHTS, {"lm.lm_head.weight"} if cfg.tie_embeddings else set())
    return "LingridForCausalLM"


def export_model(model_cfg: ModelConfig | dict[str, Any], state: dict[str, Any], out_dir: str | Path, *,
                 fmt: str = "auto", tokenizer=None, provenance: dict[str, Any] | None = None) -> Exported:
    """Write the folder (created; must be empty or absent). `state`: our LM's state dict."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is not allowed; allowed: {', '.join(FORMATS)}")
    cfg = model_cfg if isinstance(model_cfg, ModelConfig) else ModelConfig.model_validate(model_cfg)
    cfg = cfg.model_copy(update={"backend": "auto"})
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    note = ""
    if fmt in ("auto", "fla"):
        try:
            fla_config(cfg)
        except Unmappable as exc:
            if fmt == "fla":
                raise
            fmt, note = "lingrid", f"not an fla model: {exc}"
        else:
            fmt = "fla"
    out.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {}
    if tokenizer is not None:
        common.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id)
    writer = _write_fla if fmt == "fla" else _write_lingrid
    model_class = writer(cfg, state, out, common)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    record = {"format": fmt, "model_class": model_class, "note": note, "lingrid_model": cfg.model_dump(mode="json"),
              **(provenance or {})}
    (out / PROVENANCE).write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return Exported(out, fmt, model_class, note)


def export_trial(trial_key: str, out_dir: str | Path, *, fmt: str = "auto", results: str | Path,
                 ray_tmp: str | Path, checkpoint: str | Path | None = None) -> Exported:
    """Export a finished LM trial of the store (weights of its last checkpoint, tokenizer of its data)."""

    trained = load_trained(trial_key, results, ray_tmp, checkpoint)
    data_dir = trained.config.get("data_dir")
    manifest = read_manifest(data_dir) if data_dir else None
    if manifest is None:
        raise ExportError(f"the data dir of trial {trial_key} ({data_dir!r}) is gone: the tokenizer lives there; "
                          "prepare the grid's data again (python -m grid data prepare SPEC.yaml)")
    tokenizer = hf_tokenizer(data_dir, manifest["tokenizer"])
    keep = ("grid", "model_id", "mixer", "hybrid", "scale", "seed", "val_loss", "git_sha")
    provenance = {"trial_key": trial_key, "checkpoint": str(trained.checkpoint), "step": trained.step,
                  "data_hash": trained.config.get("data_hash"), **{k: trained.row.get(k) for k in keep}}
    return export_model(trained.config["model"], trained.state_dict, out_dir, fmt=fmt, tokenizer=tokenizer,
                        provenance=provenance)


__all__ = ["FORMATS", "Exported", "export_model", "export_trial"]
