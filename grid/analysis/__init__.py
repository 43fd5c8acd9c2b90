"""Analysis of LM trials in the results store (`python -m grid analyze ...`).

* leaderboard: one table per scale ranked by validation loss (failed trials kept, at the bottom)
* scaling: training-loss envelope over compute and power-law fits L(C), N_opt(C), D_opt(C) (studies.md B.5)
* plots: loss curves and loss vs compute PNGs (matplotlib, imported lazily)
* cli: the `analyze` command

Submodules import pandas / numpy / duckdb only (never torch); import them directly, e.g.
``from grid.analysis.scaling import fit_scaling``.
"""
