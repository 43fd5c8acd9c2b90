"""The results-store schema: fixed columns with enforced types, plus free metric columns.

Every trial row has all FIXED_COLUMNS (missing ones are null). Any other key of a row is a
metric column whose type follows its Python value: float -> float64, int -> int64 (never
silently a float), bool -> bool, str -> string, datetime -> timestamp[us, UTC], None -> null.
Anything else (lists, dicts, tensors with more than one element, arbitrary objects) is rejected
with a clear error: JSON-encode it into a string, or put per-step series in the curves table.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any, Iterable

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

STATUSES: tuple[str, ...] = ("ok", "diverged", "nan", "error", "skipped")

# how a run was executed (grid/run/pack.py): a trial of its own, a thread of a pack, a member of a
# batched group (one stacked model for several runs)
EXEC_PATHS: tuple[str, ...] = ("solo", "pack", "batched")

PROVENANCE_COLUMNS: tuple[str, ...] = (
    "torch", "triton", "fla", "ray", "cuda", "gpu_name", "git_sha", "env_profile", "autotune",
)

# name -> arrow type, in the column order of every written file
FIXED_COLUMNS: dict[str, pa.DataType] = {
    "trial_key": pa.string(),
    "suite": pa.string(),
    "grid": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "config_json": pa.string(),
    "model_id": pa.string(),
    "mixer": pa.string(),
    "backend": pa.string(),
    "task": pa.string(),
    "setting": pa.string(),
    "lr": pa.float64(),
    "wd": pa.float64(),
    "seed": pa.int64(),
    "wall_s": pa.float64(),
    "started_at": TIMESTAMP,
    "finished_at": TIMESTAMP,
    "attempt": pa.int64(),
    "segments": pa.int64(),
    "gpu_index": pa.string(),
    "exec_path": pa.string(),
    "exec_members": pa.int64(),
    **{name: pa.string() for name in PROVENANCE_COLUMNS},
}

# the fixed columns the runner fills in for every trial (grid/run/trainable.py, grid/run/callbacks.py): a trial
# function may not report metrics by these names and a trial spec may not set them as descriptive columns
RUNNER_COLUMNS: tuple[str, ...] = (
    "trial_key", "suite", "grid", "status", "error", "config_json", "wall_s", "started_at", "finished_at",
    "attempt", "segments", "gpu_index", "exec_path", "exec_members", *PROVENANCE_COLUMNS,
)
# a metric reported as "curve/<column>" is a point of the trial's curve (the curves table), not a row column
CURVE_PREFIX = "curve/"

# Metric columns with names made by code: declared here, and only here, so that the writers (the LM
# trial, the lm-eval command) and the readers (leaderboards, analyses) cannot drift apart.

# LM recall evaluations (grid/lm/evals): one column per setting, and the summaries the tables show.
COPY_ACC = "copy_acc"                # in-context copy accuracy, mean over settings within the trained context
COPY_ACC_BEYOND = "copy_acc_beyond"  # ... over settings longer than the trained context
MQAR_ACC = "mqar_acc"                # associative recall (MQAR) accuracy, mean over numbers of pairs
NEEDLE_LOSS = "needle_loss"          # needle retrieval: loss (nats) of the answer tokens, mean over depths
RECALL_COLUMNS: tuple[str, ...] = (COPY_ACC, COPY_ACC_BEYOND, MQAR_ACC, NEEDLE_LOSS)
EVALS_SECONDS = "evals_s"            # wall time of one evaluation pass


def copy_column(span: int, gap: int) -> str:
    """In-context copy accuracy of spans of `span` tokens repeated after `gap` tokens of held-out text."""
    return f"copy_acc_k{int(span)}_g{int(gap)}"


def mqar_column(pairs: int) -> str:
    """MQAR accuracy with `pairs` key-value pairs in context."""
    return f"mqar_acc_n{int(pairs)}"


def needle_column(depth: float) -> str:
    """Needle loss with the fact at `depth` (0 = start, 1 = end) of the held-out text, in whole percent."""
    return f"needle_loss_d{round(float(depth) * 100):02d}"


_SETTING_COLUMN = re.compile(r"^(copy_acc_k\d+_g\d+|mqar_acc_n\d+|needle_loss_d\d+)$")


def is_recall_setting_column(name: str) -> bool:
    """Whether `name` was made by copy_column, mqar_column or needle_column."""
    return bool(_SETTING_COLUMN.match(name))


# lm-evaluation-harness rows (suite "lm-eval", grid/harness): one row per (trial, task)
LM_EVAL_SUITE = "lm-eval"
SOURCE_TRIAL_KEY = "source_trial_key"  # the LM trial whose model was evaluated


def lm_eval_column(metric: str, filter_name: str = "none") -> str:
    """A harness metric ("acc", filter "none") as a column name: acc; another filter is appended (exact_match_flex)."""
    clean = re.sub(r"[^A-Za-z0-9_]+", "_", metric).strip("_") or "metric"
    if filter_name and filter_name != "none":
        clean += "_" + (re.sub(r"[^A-Za-z0-9_]+", "_", filter_name).strip("_") or "filter")
    return clean


# `python -m grid results rekey` (grid/results/rekey.py): the key a row had before it was re-keyed (its Tune
# trial directory and checkpoints are still named by it)
REKEYED_FROM = "rekeyed_from"


# DuckDB type names of the fixed columns (for the empty-store view)
DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "double": "DOUBLE",
    "int64": "BIGINT",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}

# Safe path components for suite / grid partitions and trial_key file names.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$")


class SchemaError(TypeError, ValueError):
    """A row does not fit the results schema (wrong type, bad status, bad name)."""


def check_name(kind: str, value: Any) -> str:
    """Validate a partition value / trial_key: it becomes a path component."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or value in (".", ".."):
        raise SchemaError(
            f"{kind} must be a non-empty string of letters, digits, '_', '.', '+', '-' "
            f"(not starting with '.' or '-', at most 200 chars); got {value!r}"
        )
    return value


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _unwrap_scalar(value: Any) -> Any:
    """numpy scalars, 0-d arrays, one-element tensors -> plain Python values (anything else unchanged)."""
    if value is None or isinstance(value, (bool, int, float, str, _dt.datetime)):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        shape = getattr(value, "shape", ())
        try:
            size = 1
            for d in shape:
                size *= int(d)
        except TypeError:
            size = 0
        if size == 1:
            try:
                return item()
            except (TypeError, ValueError):
                return value
    return value


def to_utc(value: Any, column: str) -> _dt.datetime | None:
    """datetime (naive = UTC), pandas Timestamp, or ISO-8601 string -> aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise SchemaError(f"column {column!r}: cannot parse timestamp {value!r} ({exc})") from None
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        value = value.to_pydatetime()
    if not isinstance(value, _dt.datetime):
        raise SchemaError(f"column {column!r} expects a timestamp (datetime or ISO string), got {_type_name(value)} {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value.astimezone(_dt.timezone.utc)


def coerce_fixed(column: str, value: Any) -> Any:
    """Check / coerce one value of a fixed column to its declared type."""
    typ = FIXED_COLUMNS[column]
    value = _unwrap_scalar(value)
    if value is None:
        return None
    if typ == pa.string():
        if not isinstance(value, str):
            raise SchemaError(f"column {column!r} expects str, got {_type_name(value)} {value!r}")
        if column == "status" and value not in STATUSES:
            raise SchemaError(f"column 'status' must be one of {list(STATUSES)}, got {value!r}")
        if column == "exec_path" and value not in EXEC_PATHS:
            raise SchemaError(f"column 'exec_path' must be one of {list(EXEC_PATHS)}, got {value!r}")
        return value
    if typ == pa.float64():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"column {column!r} expects float64, got {_type_name(value)} {value!r}")
        return float(value)
    if typ == pa.int64():
        if isinstance(value, bool):
            raise SchemaError(f"column {column!r} expects int64, got bool {value!r}")
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise SchemaError(f"column {column!r} expects int64, got {_type_name(value)} {value!r}")
        return value
    if typ == TIMESTAMP:
        return to_utc(value, column)
    raise AssertionError(f"unhandled fixed type {typ}")  # pragma: no cover


def infer_type(column: str, value: Any) -> tuple[pa.DataType, Any]:
    """Arrow type and normalised value of a free (metric) column value."""
    value = _unwrap_scalar(value)
    if value is None:
        return pa.null(), None
    if isinstance(value, bool):
        return pa.bool_(), value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise SchemaError(f"column {column!r}: int {value} does not fit int64")
        return pa.int64(), value
    if isinstance(value, float):
        return pa.float64(), value
    if isinstance(value, str):
        return pa.string(), value
    if isinstance(value, _dt.datetime) or hasattr(value, "to_pydatetime"):
        return TIMESTAMP, to_utc(value, column)
    raise SchemaError(
        f"column {column!r}: unsupported value type {_type_name(value)} ({value!r:.80}); metric columns take "
        "float, int, bool, str, datetime or None. JSON-encode structured values into a string column, "
        "or store per-step series with write_curve()."
    )


def _check_column_names(names: Iterable[Any]) -> None:
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise SchemaError(f"column names must be non-empty strings, got {name!r}")
        low = name.lower()
        if low in seen and seen[low] != name:
            # DuckDB resolves column names case-insensitively: 'Loss' and 'loss' would collide.
            raise SchemaError(f"columns {seen[low]!r} and {name!r} differ only by case")
        seen[low] = name


def row_table(row: dict[str, Any]) -> pa.Table:
    """One row -> a one-row arrow table: every fixed column (typed, nulls when missing) then the metrics."""
    _check_column_names(row)
    fixed_lower = {c.lower(): c for c in FIXED_COLUMNS}
    for name in row:
        if name.lower() in fixed_lower and name not in FIXED_COLUMNS:
            raise SchemaError(f"column {name!r} collides with fixed column {fixed_lower[name.lower()]!r} (case)")
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for name, typ in FIXED_COLUMNS.items():
        arrays.append(pa.array([coerce_fixed(name, row.get(name))], type=typ))
        fields.append(pa.field(name, typ))
    for name, value in row.items():
        if name in FIXED_COLUMNS:
            continue
        typ, value = infer_type(name, value)
        arrays.append(pa.array([value], type=typ))
        fields.append(pa.field(name, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Many rows with free columns (the curves table): one type per column across rows.

    int and float mixed in one column give float64; any other mix is an error.
    """
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    _check_column_names(names)
    arrays, fields = [], []
    for name in names:
        types, values = set(), []
        for r in rows:
            typ, v = infer_type(name, r.get(name))
            if typ != pa.null():
                types.add(typ)
            values.append(v)
        if not types:
            typ = pa.null()
        elif len(types) == 1:
            typ = types.pop()
        elif types == {pa.int64(), pa.float64()}:
            typ = pa.float64()
            values = [None if v is None else float(v) for v in values]
        else:
            raise SchemaError(f"column {name!r} mixes types {sorted(str(t) for t in types)} across rows")
        arrays.append(pa.array(values, type=typ))
        fields.append(pa.field(name, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def empty_frame():
    """An empty pandas frame with the fixed columns (what an empty store returns)."""
    return pa.schema([pa.field(n, t) for n, t in FIXED_COLUMNS.items()]).empty_table().to_pandas()
