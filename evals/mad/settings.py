"""MAD task settings: the validated config of one setting, and the 66 settings of the task YAMLs (spec §2, §6.1)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from evals.mad.tasks import TASKS, get_task
from grid.cliargs import validation_message

# Resolved from this file, not the working directory (mad-lab's relative-path pitfall, spec §8.8).
TASK_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "tasks"



def task_name(task: str) -> str:
    """Registry name for a registry name or short code (case-insensitive code); clear error otherwise."""
    return get_task(task).name


class MADSetting(BaseModel):
    """One MAD task setting. Defaults are mad-lab's MADConfig defaults (spec §2.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = "in-context-recall"
    vocab_size: int = 16
    seq_len: int = 128
    frac_noise: float = 0.0
    noise_vocab_size: int = 0
    num_tokens_to_copy: int = 0
    k_motif_size: int = 1
    v_motif_size: int = 1
    multi_query: bool = True
    num_train_examples: int = 12800
    num_test_examples: int = 1280
    seed: int = 12345

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, v: Any) -> str:
        if not isinstance(v, str):
            raise ValueError(f"task must be a string, got {v!r}")
        return task_name(v)

    @model_validator(mode="after")
    def _check(self) -> "MADSetting":
        errors = _problems(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @property
    def code(self) -> str:
        return TASKS[self.task].code

    @property
    def dir_name(self) -> str:
        """mad-lab's `make_dataset_path` directory name (spec §6.1)."""
        fn = str(float(self.frac_noise)).replace(".", "#")
        return (
            f"t-{self.code}_vs-{self.vocab_size}_sl-{self.seq_len}_ntr-{self.num_train_examples}"
            f"_nte-{self.num_test_examples}_km-{self.k_motif_size}_vm-{self.v_motif_size}"
            f"_mq-{int(self.multi_query)}_fn-{fn}_nvs-{self.noise_vocab_size}"
            f"_ntc-{self.num_tokens_to_copy}_s-{self.seed}"
        )

    @property
    def setting_id(self) -> str:
        """`baseline`, or `field=value` (comma-joined) for fields differing from the task's baseline.

        Computed from the fields against the repo's task YAML, so equal settings get equal ids and
        equality/hashing stay field-only.
        """
        ref = MADSetting.model_construct(**_baseline_fields(self.task, str(TASK_CONFIG_DIR))).model_dump()
        diff = [f"{k}={v}" for k, v in self.model_dump().items() if ref[k] != v]
        return ",".join(diff) or "baseline"


def _problems(s: MADSetting) -> list[str]:
    """Human-readable reasons why `s` cannot be generated: each names the field, value and what is allowed."""
    t = s.task
    out: list[str] = []

    def need(ok: bool, field: str, allowed: str) -> None:
        if not ok:
            out.append(f"{field}={getattr(s, field)!r} is not allowed for {t}: {allowed}")

    for f in ("vocab_size", "seq_len", "num_train_examples", "num_test_examples", "k_motif_size", "v_motif_size"):
        need(getattr(s, f) >= 1, f, "must be >= 1")
    need(s.noise_vocab_size >= 0, "noise_vocab_size", "must be >= 0")
    need(s.num_tokens_to_copy >= 0, "num_tokens_to_copy", "must be >= 0")
    need(0.0 <= s.frac_noise < 1.0, "frac_noise", "must satisfy 0 <= frac_noise < 1")
    if out:
        return out
    task = TASKS[t]
    if not task.noise:
        # the benchmark never uses noise outside recall, and the spec does not pin its other forms
        need(s.frac_noise == 0, "frac_noise", "must be 0 (noise is only supported for recall tasks)")
    task.check(s, need)  # the task's own constraints (its module in evals/mad/tasks/)
    return out


# --------------------------------------------------------------------------- task YAMLs


@functools.lru_cache(maxsize=32)
def _read_yaml(task: str, config_dir: str) -> dict:
    path = Path(config_dir) / f"{task}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"MAD task config not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (YAML) file") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    # an empty file must not silently run the defaults: the task's baseline is what it measures
    if not isinstance(doc, dict) or not isinstance(doc.get("baseline"), dict) or not doc["baseline"]:
        raise ValueError(f"{path}: baseline: a mapping of the task's fields is required (allowed top-level keys: "
                         f"baseline, changes), got {doc!r:.80}")
    unknown = set(doc) - {"baseline", "changes"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: baseline, changes")
    return doc


def _baseline_fields(task: str, config_dir: str) -> dict:
    return {"task": task, **(_read_yaml(task, config_dir).get("baseline") or {})}


def load_task_settings(task: str, config_dir: str | Path | None = None) -> list[MADSetting]:
    """Baseline first, then one setting per (field, value) of `changes`, in YAML order."""
    task = task_name(task)
    cdir = str(Path(config_dir).resolve()) if config_dir is not None else str(TASK_CONFIG_DIR)
    base = _baseline_fields(task, cdir)
    changes = _read_yaml(task, cdir).get("changes") or {}

    def setting(fields: dict, where: str) -> MADSetting:
        try:
            return MADSetting(**fields)
        except ValidationError as exc:
            raise ValueError(validation_message(exc, f"{task}.yaml: {where}")) from None

    if not isinstance(changes, dict):
        raise ValueError(f"{task}.yaml: changes must be a mapping of field -> list of values, got {changes!r:.80}")
    out = [setting(base, "baseline")]
    for field, values in changes.items():
        if not isinstance(values, list):
            raise ValueError(f"{task}.yaml: changes.{field} must be a list of values, got {values!r}")
        out += [setting({**base, field: v}, f"changes.{field}") for v in values]
    return out


def all_settings(tasks: Iterable[str] | None = None,
                 which: Literal["all", "baseline"] = "all",
                 config_dir: str | Path | None = None) -> list[MADSetting]:
    """Settings of `tasks` (names or codes; default all six) in registry order CR, NR, FR, M, C, SC."""
    if which not in ("all", "baseline"):
        raise ValueError(f"which={which!r} is not allowed: use 'all' or 'baseline'")
    wanted = set(TASKS) if tasks is None else {task_name(t) for t in tasks}
    out: list[MADSetting] = []
    for task in TASKS:  # registry order, whatever order the caller gave
        if task in wanted:
            settings = load_task_settings(task, config_dir)
            out += settings[:1] if which == "baseline" else settings
    return out
