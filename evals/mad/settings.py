"""MAD task settings: the validated config of one setting, and the 66 settings of the task YAMLs (spec §2, §6.1)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from evals.mad.tasks import TASK_CODES

# Resolved from this file, not the working directory (mad-lab's relative-path pitfall, spec §8.8).
TASK_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "tasks"

_CODE_TO_TASK = {code: name for name, code in TASK_CODES.items()}
_RECALL = ("in-context-recall", "noisy-in-context-recall")


def task_name(task: str) -> str:
    """Registry name for a registry name or short code (case-insensitive code); clear error otherwise."""
    if task in TASK_CODES:
        return task
    if task.upper() in _CODE_TO_TASK:
        return _CODE_TO_TASK[task.upper()]
    allowed = ", ".join(f"{n} ({c})" for n, c in TASK_CODES.items())
    raise ValueError(f"unknown MAD task {task!r}; allowed: {allowed}")


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
        return TASK_CODES[self.task]

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
    if t not in _RECALL:
        # the benchmark never uses noise outside recall, and the spec does not pin its other forms
        need(s.frac_noise == 0, "frac_noise", "must be 0 (noise is only supported for recall tasks)")
    if t in _RECALL:
        need(s.seq_len % 2 == 0 and s.seq_len >= 4, "seq_len", "must be even and >= 4 (L/2 key-value pairs)")
        need(s.frac_noise == 0 or s.noise_vocab_size > 0, "noise_vocab_size", "must be > 0 when frac_noise > 0")
        non_special = s.vocab_size - (0 if s.multi_query else 1) - s.noise_vocab_size
        need(non_special >= 2, "vocab_size",
             f"must leave >= 2 key/value tokens after {s.noise_vocab_size} noise tokens"
             + ("" if s.multi_query else " and the copy-prefix token"))
    elif t == "fuzzy-in-context-recall":
        need(s.multi_query, "multi_query", "must be True (only the multi-query form is specified)")
        n_key, n_val = (s.vocab_size - 1) // 2, (s.vocab_size - 1) - (s.vocab_size - 1) // 2
        need(n_key >= s.k_motif_size and n_val >= s.v_motif_size, "vocab_size",
             f"needs >= {s.k_motif_size} key and >= {s.v_motif_size} value tokens (motifs use distinct tokens)")
        need(s.seq_len > 2 * (s.k_motif_size + s.v_motif_size), "seq_len",
             f"must be > 2*(k_motif_size+v_motif_size) = {2 * (s.k_motif_size + s.v_motif_size)}")
    elif t == "memorization":
        need(s.seq_len % 2 == 0, "seq_len", "must be even ((key, insert-token) pairs)")
        need(s.vocab_size >= 4, "vocab_size", "must be >= 4 (keys, values and the insert token)")
    elif t == "compression":
        need(s.vocab_size >= 2 and s.seq_len >= 2, "vocab_size" if s.vocab_size < 2 else "seq_len", "must be >= 2")
    elif t == "selective-copying":
        need(s.vocab_size >= 3, "vocab_size", "must be >= 3 (data, blank and copy tokens)")
        need(s.num_tokens_to_copy >= 1, "num_tokens_to_copy", "must be >= 1")
        if s.num_tokens_to_copy >= 1:
            need(s.seq_len > 2 * s.num_tokens_to_copy + 1, "seq_len",
                 f"must be > 2*num_tokens_to_copy+1 = {2 * s.num_tokens_to_copy + 1}")
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
            from grid.cliargs import validation_message  # noqa: PLC0415

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
    wanted = set(TASK_CODES) if tasks is None else {task_name(t) for t in tasks}
    out: list[MADSetting] = []
    for task in TASK_CODES:  # registry order, whatever order the caller gave
        if task in wanted:
            settings = load_task_settings(task, config_dir)
            out += settings[:1] if which == "baseline" else settings
    return out
