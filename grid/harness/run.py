"""lm-evaluation-harness on a trained LM trial: export it, run `lm_eval.simple_evaluate`, store one row per task.

    rows = run_lm_eval("3f2a9c0d1e4b5a6f", ["lambada_openai"], results="benchmark/results", ray_tmp="benchmark/ray")

The trial is exported (grid/export) into a temporary folder, in the lingrid format by default (our
own stack, so the harness scores exactly the model the grid trained, on CPU or GPU), and loaded by
the harness's `HFLM`. Every task of the harness's results becomes one row of suite `lm-eval`, grid
= the trial's grid, written by the one results writer (ResultsStore.write_row). The row carries the
trial's descriptive columns, `source_trial_key`, the task, and each metric as a column
(schema.lm_eval_column: `acc`, `acc_stderr`, `word_perplexity`, ...). Its trial_key is grid.keys.trial_key
of the row's config (source trial, task, the task's resolved harness config and version,
few-shot, limit, seed, export format): running the same evaluation again replaces the row.
"""
from __future__ import annotations

import datetime as dt
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from grid.env import provenance
from grid.keys import canonical_json, content_hash, trial_key as key_of
from grid.results.schema import LM_EVAL_SUITE, PROVENANCE_COLUMNS, SOURCE_TRIAL_KEY, lm_eval_column
from grid.results.store import ResultsStore

# Lazy here: fla, torch (heavy: never at import time on the driver); lm_eval (optional or slow to import: only the
#   paths that use them); grid.export.hf, grid.export.locate (they import torch or Ray)

COPIED_COLUMNS = ("model_id", "mixer", "backend", "hybrid", "scale", "seed", "non_embedding_params")


class HarnessError(RuntimeError):
    """lm-eval is missing, or a task cannot be run; the message names the fix."""


def require_lm_eval():
    try:
        import lm_eval  # noqa: PLC0415
        from lm_eval.models.huggingface import HFLM  # noqa: PLC0415
        from lm_eval.tasks import TaskManager  # noqa: PLC0415
    except ImportError as exc:
        raise HarnessError(f"lm-evaluation-harness is not installed ({exc}): pip install -e '.[eval]'") from None
    return lm_eval, HFLM, TaskManager


def _metrics(task_result: dict[str, Any]) -> dict[str, float]:
    """{column: value} from the harness's "metric,filter" keys (the alias and non-numbers dropped)."""
    out = {}
    for key, value in task_result.items():
        if key == "alias" or "," not in key:
            continue
        metric, _, filt = key.partition(",")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # e.g. "N/A" stderr
        out[lm_eval_column(metric, filt)] = float(value) if math.isfinite(float(value)) else None
    return out


def run_lm_eval(trial_key: str, tasks: list[str], *, results: str | Path, ray_tmp: str | Path,
                checkpoint: str | Path | None = None, include_path: str | Path | None = None,
                num_fewshot: int | None = None, limit: int | None = None, batch_size: int = 1,
                device: str | None = None, fmt: str = "lingrid", seed: int = 0) -> list[dict[str, Any]]:
    """Evaluate a finished LM trial on harness `tasks`; returns the rows written to the store."""
    lm_eval, HFLM, TaskManager = require_lm_eval()
    import torch  # noqa: PLC0415

    from grid.export.hf import export_trial  # noqa: PLC0415
    from grid.export.locate import trial_row  # noqa: PLC0415

    source = trial_row(trial_key, results)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="lingrid-lm-eval-") as tmp:
        exported = export_trial(trial_key, Path(tmp) / "model", fmt=fmt, results=results, ray_tmp=ray_tmp,
                                checkpoint=checkpoint)
        if exported.format == "fla":
            import fla  # noqa: F401, PLC0415  (registers fla's model classes with transformers)
        extra = {}
        if exported.format == "lingrid" and not device.startswith("cuda"):
            extra["lingrid_backend"] = "reference"  # `auto` would pick fused kernels whenever a GPU is visible
        lm = HFLM(pretrained=str(exported.out_dir), backend="causal", trust_remote_code=True, device=device,
                  batch_size=batch_size, dtype="float32", **extra)
        manager = TaskManager(include_path=str(include_path)) if include_path else TaskManager()
        try:
            out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                          task_manager=manager, log_samples=False, random_seed=seed,
                                          numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
        except KeyError as exc:  # the harness's "task not found"
            raise HarnessError(f"lm-eval does not know task {exc}; --include-path DIR adds local task YAMLs") from None
    wall = time.time() - t0
    finished = dt.datetime.now(dt.timezone.utc)
    prov = {k: v for k, v in provenance().items() if k in PROVENANCE_COLUMNS}
    version = getattr(lm_eval, "__version__", None)
    store = ResultsStore(results)
    rows = []
    for task, task_result in (out or {}).get("results", {}).items():
        config = {"suite": LM_EVAL_SUITE, SOURCE_TRIAL_KEY: trial_key, "task": task, "lm_eval": version,
                  "task_version": out.get("versions", {}).get(task),
                  "task_config": content_hash(out.get("configs", {}).get(task, {})),
                  "num_fewshot": out.get("n-shot", {}).get(task, num_fewshot), "limit": limit, "seed": seed,
                  "export_format": exported.format}
        n = (out.get("n-samples", {}).get(task) or {}).get("effective")
        row = {"trial_key": key_of(LM_EVAL_SUITE, config), "status": "ok", "config_json": canonical_json(config), "task": task,
               SOURCE_TRIAL_KEY: trial_key, **{c: source.get(c) for c in COPIED_COLUMNS},
               "wall_s": wall, "started_at": started, "finished_at": finished, **prov,
               "lm_eval_version": version, "export_format": exported.format, "num_fewshot": config["num_fewshot"],
               "n_samples": None if n is None else int(n), **_metrics(task_result)}
        store.write_row(row, suite=LM_EVAL_SUITE, grid=source["grid"])
        rows.append(row)
    return rows


__all__ = ["HarnessError", "run_lm_eval"]
