"""Compute scaling laws from LM training curves (studies.md B.5: Chinchilla approach 1, as in Shen et al. 2024).

For one architecture (an arch label plus hybrid layout, trained at several sizes under one recipe):

1. every 'ok' trial's training-loss curve is put on a compute axis C in PFLOP/s-days
   (1 PFLOP/s-day = 1e15 x 86400 FLOPs), from the curve's cumulative `flops` column, or
   tokens x the trial's `train_flops_per_token` where a curve has no flops;
2. each curve is interpolated (linearly in log C) onto one common log-spaced grid of C values,
   defined only inside the C range the trial actually covers;
3. the lower envelope takes, at every grid C, the minimum training loss over the trials available
   there, and keeps the trial that realises it: its non-embedding size N and the tokens D it had
   seen at that C;
4. pure power laws Y = beta * C^alpha are fitted by least squares in log-log space:
   L(C) on the envelope, and N_opt(C), D_opt(C) on the (C, N) and (C, D) of the envelope points
   (only when at least two distinct sizes realise the envelope).

Honesty rules, reported in the `note` column of fit_scaling: too few trials or sizes, an envelope
realised by one model (a learning curve, not a compute frontier), excluded non-ok trials, and a
loss that does not fall with compute. Envelope points are grid points interpolated from a few
curves, not independent measurements: R^2 measures curvature, not statistical confidence.
Seeds: trials of the same size and token budget are averaged (`average_seeds=True`) before the
envelope is taken, so that seed noise does not bias the minimum downwards.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from grid.analysis.data import arch_label, ensure_columns, is_missing, lm_rows, numeric
from grid.textable import table

PFLOPS_DAY = 1e15 * 86400.0  # FLOPs in one PFLOP/s-day
N_POINTS = 64
MIN_SIZES_ADVISED = 3  # below this the exponents are reported with a warning note

ENVELOPE_COLUMNS = ["C", "flops", "loss", "N", "D", "trial_key", "scale", "n_trials", "n_available"]
FIT_COLUMNS = ["architecture", "model_id", "hybrid", "n_trials", "n_sizes", "n_points", "n_env_sizes", "c_min",
               "c_max", "L_beta", "L_alpha", "L_r2", "N_beta", "N_alpha", "N_r2", "D_beta", "D_alpha", "D_r2",
               "note"]


def to_pflops_days(flops):
    """FLOPs -> PFLOP/s-days."""
    return np.asarray(flops, dtype=float) / PFLOPS_DAY


def fit_power_law(x, y) -> tuple[float, float, float]:
    """Least-squares fit of y = beta * x^alpha in log-log space; returns (beta, alpha, r2).

    r2 is the coefficient of determination of the linear fit of log y on log x (NaN when log y is
    constant). Raises ValueError on fewer than 2 points, non-positive or non-finite values, or a
    single distinct x.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    if x.size < 2:
        raise ValueError(f"a power-law fit needs at least 2 points, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x <= 0).any() or (y <= 0).any():
        raise ValueError("a power-law fit needs positive finite x and y")
    lx, ly = np.log(x), np.log(y)
    if np.ptp(lx) == 0:
        raise ValueError("a power-law fit needs at least 2 distinct x values")
    design = np.column_stack([np.ones_like(lx), lx])
    (log_beta, alpha), *_ = np.linalg.lstsq(design, ly, rcond=None)
    resid = ly - (log_beta + alpha * lx)
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan
    return float(math.exp(log_beta)), float(alpha), r2


def power_law(c, beta: float, alpha: float):
    """beta * c^alpha."""
    return beta * np.asarray(c, dtype=float) ** alpha


# ------------------------------------------------------------------------------ curves on C
def compute_curves(curves_df: pd.DataFrame, results_df: pd.DataFrame, skip_frac: float = 0.0) -> pd.DataFrame:
    """Per-step training loss of each trial on the compute axis.

    Columns: trial_key, step, tokens, flops, C (PFLOP/s-days), loss, N (non-embedding params),
    scale, seed, tokens_seen. Rows without a training loss or with non-positive compute are
    dropped; `skip_frac` drops each curve's first fraction of compute (e.g. warmup).
    Only trials present in `results_df` are kept.
    """
    res = ensure_columns(results_df, ["trial_key", "non_embedding_params", "train_flops_per_token", "tokens_seen",
                                      "scale", "seed"])
    res = res.drop_duplicates("trial_key")[["trial_key", "non_embedding_params", "train_flops_per_token",
                                            "tokens_seen", "scale", "seed"]]
    cur = ensure_columns(curves_df, ["trial_key", "step", "tokens", "train_loss", "flops"])
    cur = cur[["trial_key", "step", "tokens", "train_loss", "flops"]].merge(res, on="trial_key", how="inner")
    out = pd.DataFrame({
        "trial_key": cur["trial_key"].astype(str).to_numpy(),
        "step": numeric(cur["step"]),
        "tokens": numeric(cur["tokens"]),
        "loss": numeric(cur["train_loss"]),
        "N": numeric(cur["non_embedding_params"]),
        "scale": cur["scale"].to_numpy(dtype=object),
        "seed": cur["seed"].to_numpy(dtype=object),
        "tokens_seen": numeric(cur["tokens_seen"]),
    })
    flops = numeric(cur["flops"])
    fpt = numeric(cur["train_flops_per_token"])
    flops = np.where(np.isfinite(flops), flops, out["tokens"].to_numpy() * fpt)
    tokens = out["tokens"].to_numpy()
    out["tokens"] = np.where(np.isfinite(tokens), tokens, flops / fpt)
    out["flops"] = flops
    out["C"] = to_pflops_days(flops)
    keep = np.isfinite(out["loss"].to_numpy()) & np.isfinite(flops) & (flops > 0)
    out = out[keep]
    out = out.sort_values(["trial_key", "flops", "step"], kind="stable")
    if skip_frac > 0 and len(out):
        cmax = out.groupby("trial_key")["flops"].transform("max")
        out = out[out["flops"] >= skip_frac * cmax]
    return out.reset_index(drop=True)


@dataclass
class _Run:
    """One envelope candidate: a trial, or the seed-average of trials of one size and budget."""

    keys: list[str]
    N: float
    scale: object
    C: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray


def _runs(cc: pd.DataFrame) -> tuple[list[_Run], list[str]]:
    runs, dropped = [], []
    for key, part in cc.groupby("trial_key", sort=True):
        g = part.groupby("C", sort=True).agg(loss=("loss", "mean"), tokens=("tokens", "mean")).reset_index()
        if len(g) < 2:
            dropped.append(str(key))
            continue
        runs.append(_Run([str(key)], float(part["N"].iloc[0]), part["scale"].iloc[0], g["C"].to_numpy(),
                         g["loss"].to_numpy(), g["tokens"].to_numpy()))
    return runs, dropped


def _on_grid(run: _Run, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    loss = np.full(grid.shape, np.nan)
    tok = np.full(grid.shape, np.nan)
    lo, hi = run.C[0] * (1 - 1e-9), run.C[-1] * (1 + 1e-9)
    m = (grid >= lo) & (grid <= hi)
    loss[m] = np.interp(np.log(grid[m]), np.log(run.C), run.loss)
    tok[m] = np.interp(grid[m], run.C, run.tokens)
    return loss, tok


def _envelope(curves_df: pd.DataFrame, results_df: pd.DataFrame, n_points: int = N_POINTS, skip_frac: float = 0.0,
              average_seeds: bool = True) -> tuple[pd.DataFrame, dict]:
    cc = compute_curves(curves_df, results_df, skip_frac)
    info = {"n_trials": 0, "dropped": [], "n_sizes": 0}
    empty = pd.DataFrame(columns=ENVELOPE_COLUMNS)
    if cc.empty:
        return empty, info
    runs, dropped = _runs(cc)
    info["dropped"] = dropped
    info["n_trials"] = len(runs)
    info["n_sizes"] = len({r.N for r in runs if np.isfinite(r.N)})
    if not runs:
        return empty, info
    cmin = min(r.C[0] for r in runs)
    cmax = max(r.C[-1] for r in runs)
    if n_points < 2 or cmax <= cmin:
        grid = np.array([cmin])
    else:
        grid = np.exp(np.linspace(math.log(cmin), math.log(cmax), n_points))
        grid[0], grid[-1] = cmin, cmax
    on = [_on_grid(r, grid) for r in runs]
    loss = np.vstack([o[0] for o in on])
    tok = np.vstack([o[1] for o in on])
    if average_seeds:  # one candidate per (size, scale, final tokens): mean over its seeds
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(runs):
            groups.setdefault((r.N, str(r.scale), round(float(r.tokens[-1]), -3)), []).append(i)
        members = list(groups.values())
        loss = np.vstack([loss[idx].mean(axis=0) for idx in members])
        tok = np.vstack([tok[idx].mean(axis=0) for idx in members])
    else:
        members = [[i] for i in range(len(runs))]
    avail = np.isfinite(loss)
    rows = []
    for j, c in enumerate(grid):
        if not avail[:, j].any():
            continue
        col = np.where(avail[:, j], loss[:, j], np.inf)
        g = int(np.argmin(col))
        first = runs[members[g][0]]
        rows.append({
            "C": float(c), "flops": float(c) * PFLOPS_DAY, "loss": float(loss[g, j]), "N": first.N,
            "D": float(tok[g, j]), "trial_key": ",".join(k for i in members[g] for k in runs[i].keys),
            "scale": first.scale, "n_trials": len(members[g]), "n_available": int(avail[:, j].sum()),
        })
    return pd.DataFrame(rows, columns=ENVELOPE_COLUMNS), info


def envelope(curves_df: pd.DataFrame, results_df: pd.DataFrame, n_points: int = N_POINTS, skip_frac: float = 0.0,
             average_seeds: bool = True) -> pd.DataFrame:
    """Lower envelope of the training-loss curves of ONE architecture's trials over compute.

    `results_df`: the architecture's trial rows (only their trial_key, non_embedding_params,
    train_flops_per_token, tokens_seen, scale, seed are read; filter status yourself, or use
    fit_scaling which keeps status='ok'). `curves_df`: curves rows (trial_key, step, tokens,
    train_loss, flops). Returns one row per grid point covered by at least one trial, with
    columns C (PFLOP/s-days), flops, loss (the minimum), N and D (size and tokens seen of the
    realising trial at that C), trial_key (comma-joined when seeds were averaged), scale,
    n_trials (seeds averaged in the realising run), n_available (runs covering that C).
    `df.attrs` holds n_trials (curves used), n_sizes, dropped (trials with < 2 curve points).
    """
    env, info = _envelope(curves_df, results_df, n_points, skip_frac, average_seeds)
    env.attrs.update(info)
    return env


# ------------------------------------------------------------------------------ per architecture
def _empty_fit(label, model_id, hybrid) -> dict:
    d = {c: math.nan for c in FIT_COLUMNS}
    d.update(architecture=label, model_id=model_id, hybrid=hybrid, n_trials=0, n_sizes=0, n_points=0,
             n_env_sizes=0, note="")
    return d


def fit_architecture(curves_df: pd.DataFrame, results_df: pd.DataFrame, n_points: int = N_POINTS,
                     skip_frac: float = 0.0, average_seeds: bool = True) -> tuple[dict, pd.DataFrame]:
    """(fit row, envelope) for one architecture's trials (non-ok trials are excluded and counted in the note)."""
    res = lm_rows(results_df)
    first = res.iloc[0] if len(res) else {}
    model_id = None if len(res) == 0 or is_missing(first["model_id"]) else first["model_id"]
    hybrid = None if len(res) == 0 or is_missing(first["hybrid"]) else first["hybrid"]
    label = arch_label(model_id, hybrid, None if len(res) == 0 else first["mixer"])
    row = _empty_fit(label, model_id, hybrid)
    notes = []
    ok = res[res["status"].astype(object) == "ok"]
    n_bad = len(res) - len(ok)
    if n_bad:
        counts = res.loc[res["status"].astype(object) != "ok", "status"].astype(object).fillna("?").value_counts()
        notes.append("excluded " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    env, info = _envelope(curves_df, ok, n_points, skip_frac, average_seeds)
    env.attrs.update(info)
    if info["dropped"]:
        notes.append(f"{len(info['dropped'])} ok trial(s) without a usable curve (< 2 points)")
    row.update(n_trials=info["n_trials"], n_sizes=info["n_sizes"], n_points=len(env))
    if env.empty:
        keys = set(ok["trial_key"])
        has_loss = ("train_loss" in curves_df.columns and "trial_key" in curves_df.columns
                    and curves_df.loc[curves_df["trial_key"].isin(keys), "train_loss"].notna().any())
        if has_loss:
            notes.append("curves have training loss but no compute (no flops, no tokens x train_flops_per_token)"
                         ": nothing to fit")
        else:
            notes.append("no ok trial with a training-loss curve: nothing to fit")
        row["note"] = "; ".join(notes)
        return row, env
    row.update(c_min=float(env["C"].min()), c_max=float(env["C"].max()), n_env_sizes=int(env["N"].nunique()))
    if len(env) >= 2 and env["C"].nunique() >= 2:
        row["L_beta"], row["L_alpha"], row["L_r2"] = fit_power_law(env["C"], env["loss"])
        if row["L_alpha"] >= 0:
            notes.append("loss does not fall with compute (alpha >= 0)")
    else:
        notes.append("fewer than 2 envelope points: no L(C) fit")
    if info["n_trials"] == 1:
        notes.append("one trial only: L(C) is a single learning curve, not a compute-optimal frontier")
    elif row["n_env_sizes"] < 2 and np.isfinite(row["L_beta"]):
        notes.append("one model size realises the whole envelope: L(C) is its learning curve, not a "
                     "compute-optimal frontier")
    sizes_ok = np.isfinite(env["N"].to_numpy(dtype=float)).all()
    tokens_ok = np.isfinite(env["D"].to_numpy(dtype=float)).all()
    if not sizes_ok:
        notes.append("non_embedding_params missing: no N_opt/D_opt fit")
    elif row["n_env_sizes"] < 2:
        notes.append(f"N_opt/D_opt not fitted: only {row['n_env_sizes']} size realises the envelope (need >= 2)")
    else:
        row["N_beta"], row["N_alpha"], row["N_r2"] = fit_power_law(env["C"], env["N"])
        if tokens_ok:
            row["D_beta"], row["D_alpha"], row["D_r2"] = fit_power_law(env["C"], env["D"])
        else:
            notes.append("tokens unknown on some envelope points: no D_opt fit")
    if 1 < info["n_sizes"] < MIN_SIZES_ADVISED:
        notes.append(f"only {info['n_sizes']} sizes (the paper used 6): exponents are rough")
    row["note"] = "; ".join(notes)
    return row, env


def architecture_groups(results_df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """LM result rows split by architecture label (arch label + hybrid layout), sorted by label."""
    res = lm_rows(results_df)
    labels = [arch_label(m, h, x) for m, h, x in zip(res["model_id"], res["hybrid"], res["mixer"])]
    res = res.assign(_arch=labels)
    return {k: part.drop(columns="_arch") for k, part in sorted(res.groupby("_arch", sort=False), key=lambda kv: kv[0])}


def fit_scaling(curves: pd.DataFrame, results: pd.DataFrame, n_points: int = N_POINTS, skip_frac: float = 0.0,
                average_seeds: bool = True, return_envelopes: bool = False):
    """Per-architecture scaling fits (one row each, FIT_COLUMNS).

    L(C) = L_beta * C^L_alpha on the envelope (C in PFLOP/s-days); N_opt(C) = N_beta * C^N_alpha
    (non-embedding parameters) and D_opt(C) = D_beta * C^D_alpha (tokens) when >= 2 distinct
    sizes realise the envelope, else NaN with a note. n_trials: ok trials with a curve;
    n_sizes: their distinct sizes; n_points: envelope points; n_env_sizes: sizes realising it.
    With `return_envelopes=True` returns (table, {architecture: envelope DataFrame}).
    """
    rows, envs = [], {}
    for label, part in architecture_groups(results).items():
        keys = set(part["trial_key"])
        cur = curves[curves["trial_key"].isin(keys)] if "trial_key" in curves.columns else curves.iloc[0:0]
        row, env = fit_architecture(cur, part, n_points, skip_frac, average_seeds)
        row["architecture"] = label
        rows.append(row)
        envs[label] = env
    table = pd.DataFrame(rows, columns=FIT_COLUMNS)
    return (table, envs) if return_envelopes else table


# ------------------------------------------------------------------------------ rendering
def _law(beta, alpha, sci: bool) -> str:
    if is_missing(beta) or is_missing(alpha):
        return "-"
    b = f"{beta:.3g}" if sci else f"{beta:.4f}"
    return f"{b}·C^{alpha:+.4f}"


def coefficient_table(fits: pd.DataFrame) -> pd.DataFrame:
    """fit_scaling's table as display strings: architecture, L(C), R², N_opt(C), D_opt(C), counts, note."""
    out = pd.DataFrame({
        "architecture": fits["architecture"],
        "L(C)": [_law(b, a, False) for b, a in zip(fits["L_beta"], fits["L_alpha"])],
        "R²": ["-" if is_missing(r) else f"{r:.3f}" for r in fits["L_r2"]],
        "N_opt(C)": [_law(b, a, True) for b, a in zip(fits["N_beta"], fits["N_alpha"])],
        "D_opt(C)": [_law(b, a, True) for b, a in zip(fits["D_beta"], fits["D_alpha"])],
        "trials": fits["n_trials"].astype(int).astype(str),
        "sizes": fits["n_sizes"].astype(int).astype(str),
        "points": fits["n_points"].astype(int).astype(str),
        "note": fits["note"].fillna(""),
    })
    return out


def render_table(df: pd.DataFrame, markdown: bool = False) -> str:
    """Plain aligned text (or markdown) of a frame of strings (grid/textable.py)."""

    return table([str(c) for c in df.columns], [[str(v) for v in r] for r in df.itertuples(index=False)],
                 markdown=markdown)


__all__ = ["ENVELOPE_COLUMNS", "FIT_COLUMNS", "PFLOPS_DAY", "architecture_groups", "coefficient_table",
           "compute_curves", "envelope", "fit_architecture", "fit_power_law", "fit_scaling", "power_law",
           "render_table", "to_pflops_days"]
