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
