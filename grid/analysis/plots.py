"""PNG plots of LM trials: training-loss curves and loss vs compute with the fitted envelope.

matplotlib is imported lazily (only when a plot is drawn) and drawn with the Agg canvas directly
(`matplotlib.figure.Figure` + `FigureCanvasAgg`): the global pyplot backend is never touched, so
this works headless and inside a notebook alike. Without matplotlib, PlotsUnavailable says
`pip install matplotlib` (or the `plots` extra: `pip install -e '.[plots]'`).

    write_plots("benchmark/results", "plots/")      # every plot of the store, returns the paths
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from grid.analysis.data import arch_label, is_missing, lm_rows, load_lm, numeric
from grid.analysis.recall import BASELINE, recall_table
from grid.analysis.scaling import N_POINTS, architecture_groups, compute_curves, fit_architecture, power_law

# Lazy here: matplotlib (optional or slow to import: only the paths that use them); textwrap (one code path)

DPI = 120


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _figure(width: float = 8.0, height: float = 5.0):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as exc:
        raise PlotsUnavailable(f"plots need matplotlib ({exc}); install it with `pip install matplotlib` "
                               "(or `pip install -e '.[plots]'`)") from None
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _slug(s) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", str(s)).strip("_") or "x"


def _legend(ax, n: int) -> None:
    if n == 0:
        return
    ax.legend(fontsize=6 if n > 12 else 8, ncol=1 if n <= 16 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              frameon=False)


# ------------------------------------------------------------------------------ axes and colours
MANTISSAS = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9)
MAX_TICKS = 7


def _tick_text(v: float) -> str:
    """A tick value in plain words: 3.5, 400, 20K, 1.5M, 3e-06 (never 4x10^0)."""
    if v == 0:
        return "0"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    if abs(v) < 1e-2:  # one style for small values: 1e-6, 2.5e-5, 1e-3
        mant, exp = f"{v:.2e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{v:.3g}"


def log_ticks(lo: float, hi: float, max_ticks: int = MAX_TICKS) -> list[float]:
    """Tick positions for a log axis from lo to hi: powers of ten when it spans two decades or more,
    else 'nice' numbers (1, 1.5, 2, 2.5, 3, 4, 5, ... x 10^k) spaced evenly in log, at most max_ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi <= lo:
        return [lo] if math.isfinite(lo) and lo > 0 else []
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    span = math.log10(hi / lo)
    mantissas = (1,) if span >= 2 else MANTISSAS
    cands = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mantissas if lo <= m * 10.0 ** e <= hi]
    if span >= 2 and len(cands) > max_ticks:
        step = math.ceil(len(cands) / max_ticks)
        cands = cands[::step]
    out: list[float] = []
    gap = span / max_ticks
    for c in cands:  # greedy: keep a tick when it is far enough (in log) from the last one kept
        if not out or math.log10(c / out[-1]) >= gap * 0.999:
            out.append(c)
    return out


def _log_axis(axis, lo: float, hi: float) -> None:
    """A log axis with a few plainly labelled ticks and unlabelled minor ticks (labels never collide)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: PLC0415

    ticks = log_ticks(lo, hi)
    if ticks:
        axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _tick_text(v)))
    axis.set_minor_formatter(NullFormatter())


def _style_log_axes(ax, x: bool = True, y: bool = False) -> None:
    ax.autoscale_view()
    if x:
        _log_axis(ax.xaxis, *sorted(ax.get_xlim()))
    if y:
        _log_axis(ax.yaxis, *sorted(ax.get_ylim()))


def family_colors(pairs) -> dict[tuple[str, str], tuple]:
    """(architecture, hybrid layout) -> colour: one hue per architecture (tab10), its pure variant the
    darkest shade and each hybrid layout a lighter one, so variants of one architecture read as a family."""
    from matplotlib import colormaps  # noqa: PLC0415

    hues = colormaps["tab10"]
    bases = sorted({b for b, _ in pairs})
    out = {}
    for i, base in enumerate(bases):
        variants = sorted({h for b, h in pairs if b == base}, key=lambda h: (h != "pure", h))
        r, g, b_, _ = hues(i % 10)
        for j, h in enumerate(variants):
            t = 0.55 * j / max(len(variants) - 1, 1) if len(variants) > 1 else 0.0  # blend towards white
            out[(base, h)] = (r + (1 - r) * t, g + (1 - g) * t, b_ + (1 - b_) * t, 1.0)
    return out


def _family(row) -> tuple[str, str]:
    base = row["model_id"] if not is_missing(row["model_id"]) else row["mixer"]
    hybrid = "pure" if is_missing(row["hybrid"]) or str(row["hybrid"]) in ("", "pure") else str(row["hybrid"])
    return ("?" if is_missing(base) else str(base)), hybrid


def genuine_frontier(row) -> bool:
    """A fit worth drawing as a scaling law: at least two model sizes realise the envelope (else L(C)
    is one model's learning curve, whatever its exponent says)."""
    return np.isfinite(row["L_beta"]) and not is_missing(row["n_env_sizes"]) and int(row["n_env_sizes"]) >= 2


# ------------------------------------------------------------------------------ plots
def plot_loss_curves(curves: pd.DataFrame, results: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Training loss vs tokens, one line per trial, one PNG per (grid, scale): loss_curves_<grid>_<scale>.png.

    Trials that did not finish 'ok' are drawn dashed and labelled with their status.
    """
    res = lm_rows(results)
    out_dir = Path(out_dir)
    paths = []
    if res.empty or curves.empty:
        return paths
    res = res.assign(_label=[arch_label(m, h, x) for m, h, x in zip(res["model_id"], res["hybrid"], res["mixer"])],
                     _grid=res["grid"].astype(object).fillna("-").astype(str),
                     _scale=res["scale"].astype(object).fillna("-").astype(str))
    cur = curves.copy()
    cur["_tokens"], cur["_loss"] = numeric(cur["tokens"]), numeric(cur["train_loss"])
    cur["_step"] = numeric(cur["step"])
    cur = cur[np.isfinite(cur["_tokens"]) & (cur["_tokens"] > 0) & np.isfinite(cur["_loss"])]
    by_key = {k: p.sort_values("_step") for k, p in cur.groupby("trial_key")}
    for (grid, scale), part in res.groupby(["_grid", "_scale"], sort=True):
        part = part.sort_values(["_label", "seed"], kind="stable")
        lines = [(r, by_key[r["trial_key"]]) for _, r in part.iterrows() if r["trial_key"] in by_key]
        if not lines:
            continue
        fig = _figure()
        ax = fig.add_subplot(1, 1, 1)
        seeds = part["seed"].nunique(dropna=True) > 1
        colors = family_colors([_family(r) for r, _ in lines])
        for r, c in lines:
            label = r["_label"] + (f" s{int(r['seed'])}" if seeds and not is_missing(r["seed"]) else "")
            ok = r["status"] == "ok"
            if not ok:
                label += f" ({r['status']})"
            ax.plot(c["_tokens"], c["_loss"], lw=1.2, ls="-" if ok else "--", label=label, color=colors[_family(r)])
        ax.set_xscale("log")
        _style_log_axes(ax, x=True)
        ax.set_xlabel("tokens")
        ax.set_ylabel("training loss")
        ax.set_title(f"grid {grid} · scale {scale}")
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, len(lines))
        paths.append(_save(fig, out_dir / f"loss_curves_{_slug(grid)}_{_slug(scale)}.png"))
    return paths


def plot_loss_vs_compute(curves: pd.DataFrame, results: pd.DataFrame, out_dir: str | os.PathLike[str],
                         n_points: int = N_POINTS, skip_frac: float = 0.0) -> list[Path]:
    """Log-log training loss vs compute (PFLOP/s-days) per architecture, with the envelope and its fit.

    One PNG per architecture (loss_vs_compute_<arch>.png: every ok trial's curve, the envelope
    points, the fitted L = beta * C^alpha) and loss_vs_compute_all.png overlaying the envelopes
    and fits of all architectures. Only 'ok' trials are drawn, as in the fit.
    """
    out_dir = Path(out_dir)
    paths, overlay = [], []
    for label, part in architecture_groups(results).items():
        ok = part[part["status"].astype(object) == "ok"]
        cur = curves[curves["trial_key"].isin(set(ok["trial_key"]))] if "trial_key" in curves.columns else curves
        cc = compute_curves(cur, ok, skip_frac)
        if cc.empty:
            continue
        row, env = fit_architecture(cur, part, n_points, skip_frac)
        fig = _figure()
        ax = fig.add_subplot(1, 1, 1)
        sizes = sorted({n for n in cc["N"].unique() if np.isfinite(n)})
        cmap = _cmap(len(sizes))
        n_lines = 0
        for key, c in cc.groupby("trial_key", sort=True):
            n = c["N"].iloc[0]
            color = cmap[sizes.index(n)] if n in sizes else "grey"
            name = f"{c['scale'].iloc[0]} (N={_human(n)})" if np.isfinite(n) else str(c["scale"].iloc[0])
            ax.plot(c["C"], c["loss"], lw=1.0, alpha=0.7, color=color, label=name)
            n_lines += 1
        if len(env):
            ax.plot(env["C"], env["loss"], "k.", ms=3, label="envelope")
            n_lines += 1
        note = row["note"]
        if genuine_frontier(row):
            xs = np.geomspace(env["C"].min(), env["C"].max(), 100)
            ax.plot(xs, power_law(xs, row["L_beta"], row["L_alpha"]), "r-", lw=1.5,
                    label=f"L = {row['L_beta']:.4g}·C^{row['L_alpha']:.4f}")
            n_lines += 1
        elif np.isfinite(row["L_beta"]):  # a power law through one learning curve is no scaling law: not drawn
            note = "no scaling-law fit drawn: " + (note or "one model size realises the envelope")
        if len(env):
            overlay.append((label, _family(part.iloc[0]), env, row))
        ax.set_xscale("log")
        ax.set_yscale("log")
        _style_log_axes(ax, x=True, y=True)
        ax.set_xlabel("compute C (PFLOP/s-days)")
        ax.set_ylabel("training loss")
        ax.set_title(f"{label}: loss vs compute" + (f"\n{_wrap(note)}" if note else ""), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        _dedup_legend(ax, n_lines)
        paths.append(_save(fig, out_dir / f"loss_vs_compute_{_slug(label)}.png"))
    if overlay:
        fig = _figure()
        ax = fig.add_subplot(1, 1, 1)
        colors = family_colors([fam for _, fam, _, _ in overlay])
        n_fits = 0
        for label, fam, env, row in overlay:
            color = colors[fam]
            if genuine_frontier(row):
                ax.plot(env["C"], env["loss"], ".", ms=3, color=color)
                xs = np.geomspace(env["C"].min(), env["C"].max(), 100)
                ax.plot(xs, power_law(xs, row["L_beta"], row["L_alpha"]), "-", color=color,
                        label=f"{label}: {row['L_beta']:.4g}·C^{row['L_alpha']:.4f}")
                n_fits += 1
            else:
                ax.plot(env["C"], env["loss"], ".", ms=3, color=color, label=f"{label} (one size: no fit)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _style_log_axes(ax, x=True, y=True)
        ax.set_xlabel("compute C (PFLOP/s-days)")
        ax.set_ylabel("training loss (envelope)")
        ax.set_title("loss envelopes and power-law fits" if n_fits else
                     "loss envelopes (no architecture spans two model sizes: no scaling-law fits)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, len(overlay))
        paths.append(_save(fig, out_dir / "loss_vs_compute_all.png"))
    return paths


def _dedup_legend(ax, n: int) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    if seen:
        ax.legend(list(seen.values()), list(seen.keys()), fontsize=6 if len(seen) > 12 else 8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)


def _wrap(text: str, width: int = 95) -> str:
    import textwrap  # noqa: PLC0415

    return "\n".join(textwrap.wrap(str(text), width))


def _cmap(n: int) -> list:
    from matplotlib import colormaps  # noqa: PLC0415

    cm = colormaps["viridis"]
    return [cm(x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def _human(n: float) -> str:
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _recall_label(metric: str) -> str:
    if metric == "val_loss":
        return "validation loss (nats/token, lower is better)"
    if metric.startswith("needle_loss"):
        return f"{metric} (nats, lower is better)"
    return f"{metric} (accuracy)"


def plot_recall(results: pd.DataFrame, out_dir: str | os.PathLike[str], grid: str | None = None) -> list[Path]:
    """One PNG per metric (recall_<metric>.png): the metric against the attention fraction, one line per
    variant, the transformer as a star at 1 with a dashed reference line."""
    table = recall_table(results)
    out_dir = Path(out_dir)
    paths: list[Path] = []
    if table.empty:
        return paths
    fracs = sorted(set(table["attn_frac"].round(6)))
    ticks = {f: lay for f, lay in zip(table["attn_frac"].round(6), table["layout"]) if f not in (0.0, 1.0)}
    ticks.update({0.0: "pure linear", 1.0: "softmax"})
    for metric in table.columns[4:]:
        fig = _figure(7.0, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        n = 0
        for variant, part in table[table["variant"] != BASELINE].groupby("variant", sort=True):
            part = part.sort_values("attn_frac")
            ok = np.isfinite(part[metric].to_numpy(dtype=float))
            if ok.any():
                ax.plot(part["attn_frac"][ok], part[metric][ok], "o-", lw=1.4, label=variant)
                n += 1
        base = table[table["variant"] == BASELINE]
        if len(base) and np.isfinite(base[metric].to_numpy(dtype=float)).any():
            v = float(np.nanmean(base[metric].to_numpy(dtype=float)))
            ax.axhline(v, color="k", ls="--", lw=0.8)
            ax.plot([1.0], [v], "k*", ms=10, label=BASELINE)
            n += 1
        if n == 0:
            continue
        ax.set_xticks(fracs)
        ax.set_xticklabels([f"{f:g}\n{ticks.get(f, '')}" for f in fracs], fontsize=7)
        ax.set_xlabel("fraction of softmax-attention layers")
        ax.set_ylabel(_recall_label(metric))
        if metric != "val_loss" and not metric.startswith("needle_loss"):
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{metric} vs attention fraction" + (f" · grid {grid}" if grid else ""), fontsize=9)
        ax.grid(True, alpha=0.3)
        _legend(ax, n)
        paths.append(_save(fig, out_dir / f"recall_{_slug(metric)}.png"))
    return paths


def write_plots(store_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], grid: str | None = None,
                n_points: int = N_POINTS, skip_frac: float = 0.0) -> list[Path]:
    """Every plot for the LM trials in the store (optionally one grid); returns the PNG paths.

    Raises grid.analysis.data.NoResults on an empty store, PlotsUnavailable without matplotlib.
    """
    _figure(1, 1)  # fail early, before reading the store, when matplotlib is missing
    results, curves = load_lm(store_root, grid)
    return (plot_loss_curves(curves, results, out_dir)
            + plot_loss_vs_compute(curves, results, out_dir, n_points=n_points, skip_frac=skip_frac))


__all__ = ["PlotsUnavailable", "plot_loss_curves", "plot_loss_vs_compute", "plot_recall", "write_plots"]
