"""Plots: loss curves and loss-vs-compute PNGs are written and non-empty; clear error without matplotlib."""
from __future__ import annotations

import sys

import pytest

from grid.analysis.cli import main
from grid.analysis.synthetic import write_synthetic_ladder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    from grid.analysis.plots import write_plots

    store = tmp_path / "store"
    write_synthetic_ladder(store, archs={"gla": 1.0, "transformer": 1.05}, sizes={"s1": 2e6, "s2": 8e6}, steps=20,
                           seeds=(0, 1))
    paths = write_plots(store, tmp_path / "png")
    names = sorted(p.name for p in paths)
    assert names == ["loss_curves_synthetic_s1.png", "loss_curves_synthetic_s2.png", "loss_vs_compute_all.png",
                     "loss_vs_compute_gla.png", "loss_vs_compute_transformer.png"]
    assert all(_is_png(p) for p in paths)


def test_scaling_cli_writes_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    store = tmp_path / "store"
    write_synthetic_ladder(store, sizes={"s1": 2e6, "s2": 8e6}, steps=20)
    assert main(["scaling", "--results", str(store), "--plots", str(tmp_path / "png")]) == 0
    assert "wrote 4 plots" in capsys.readouterr().err
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == 4 and all(_is_png(p) for p in pngs)


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from grid.analysis import plots

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(plots.PlotsUnavailable, match="pip install matplotlib"):
        plots.write_plots(tmp_path, tmp_path / "png")
    assert main(["plots", "--out", str(tmp_path / "png"), "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "pip install matplotlib" in err and "Traceback" not in err


# ------------------------------------------------------------------ readable axes, honest fits, colour families
def _figures(monkeypatch, store, out):
    from grid.analysis import plots

    figs = {}
    real_save = plots._save

    def keep(fig, path):
        figs[path.name] = fig
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    plots.write_plots(store, out)
    return figs


def _visible_labels(fig, axis):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for minor in (False, True):
        for tick in axis.get_major_ticks() if not minor else axis.get_minor_ticks():
            label = tick.label1
            if label.get_visible() and label.get_text() and lo <= tick.get_loc() <= hi:
                out.append((label.get_text(), label.get_window_extent(renderer)))
    return out


def test_log_axes_have_plain_labels_that_never_overlap(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    store = tmp_path / "store"
    write_synthetic_ladder(store, sizes={"s1": 2e6, "s2": 4e6}, steps=20)  # losses within one decade
    figs = _figures(monkeypatch, store, tmp_path / "png")
    for name in ("loss_vs_compute_gla.png", "loss_vs_compute_all.png", "loss_curves_synthetic_s1.png"):
        ax = figs[name].axes[0]
        for axis in (ax.xaxis, ax.yaxis):
            labels = _visible_labels(figs[name], axis)
            assert len(labels) >= 2, (name, labels)
            texts = [t for t, _ in labels]
            assert not any("times" in t or "^" in t or "mathdefault" in t for t in texts), (name, texts)
            boxes = [b for _, b in labels]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    assert not a.overlaps(b), (name, texts)


def test_a_power_law_through_one_learning_curve_is_not_drawn(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    store = tmp_path / "store"
    write_synthetic_ladder(store, archs={"gla": 1.0}, sizes={"s1": 2e6}, steps=20, seeds=(0, 1))
    figs = _figures(monkeypatch, store, tmp_path / "png")
    ax = figs["loss_vs_compute_gla.png"].axes[0]
    assert not any(line.get_label().startswith("L =") for line in ax.get_lines())
    assert "no scaling-law fit drawn" in ax.get_title()
    assert "no scaling-law fits" in figs["loss_vs_compute_all.png"].axes[0].get_title()
    store2 = tmp_path / "store2"  # two sizes: a frontier, drawn
    write_synthetic_ladder(store2, archs={"gla": 1.0}, sizes={"s1": 2e6, "s2": 3.2e7}, steps=20)
    ax = _figures(monkeypatch, store2, tmp_path / "png2")["loss_vs_compute_gla.png"].axes[0]
    assert any(line.get_label().startswith("L =") for line in ax.get_lines())


def test_pure_and_hybrid_variants_share_a_colour_family(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import colorsys

    store = tmp_path / "store"
    write_synthetic_ladder(store, archs={"gla": 1.0, "deltanet": 1.02, "transformer": 1.05}, sizes={"s1": 2e6},
                           steps=10, hybrids=("pure", "3:1"))
    ax = _figures(monkeypatch, store, tmp_path / "png")["loss_curves_synthetic_s1.png"].axes[0]
    hue = {line.get_label(): colorsys.rgb_to_hsv(*line.get_color()[:3])[0] for line in ax.get_lines()}
    assert set(hue) == {"gla", "gla [3:1]", "deltanet", "deltanet [3:1]", "transformer", "transformer [3:1]"}
    for arch in ("gla", "deltanet", "transformer"):
        assert abs(hue[arch] - hue[f"{arch} [3:1]"]) < 0.02  # one family
    assert len({round(hue[a], 2) for a in ("gla", "deltanet", "transformer")}) == 3  # three families
