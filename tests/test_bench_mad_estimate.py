"""`grid bench mad` extrapolation: cost per batch, recomputed from a saved report (no GPU, no runs)."""
from __future__ import annotations

import json

import pytest

from evals.mad.settings import all_settings
from grid.bench.mad_scaling import batches_per_epoch, full_suite_serial_s, main


def test_baseline_only_suite_costs_six_runs_times_epochs_times_epoch_time():
    # with 1 s per epoch for every task, each setting costs 6 x 200 x its batches / its baseline's batches
    base = {s.code: s for s in all_settings(which="baseline")}
    expected = sum(6 * 200 * batches_per_epoch(s) / batches_per_epoch(base[s.code]) for s in all_settings())
    assert full_suite_serial_s({code: 1.0 for code in base}) == pytest.approx(expected)
    assert batches_per_epoch(base["CR"]) == 100 + 10  # 12,800 train + 1,280 test examples, batch 128


def test_from_json_with_an_epoch_time_replaced(tmp_path, capsys):
    rows = [{"k": 1, "suite_wall_s": 100.0, "run_wall_s_mean": 3.0, "gpu_util_mean": [10.0],
             "epoch_s_by_task": {c: 1.0 for c in ("CR", "NR", "FR", "M", "C", "SC")}},
            {"k": 4, "suite_wall_s": 25.0, "run_wall_s_mean": 3.0, "gpu_util_mean": [40.0],
             "epoch_s_by_task": {}}]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"arch": "gla", "epochs": 2, "n_gpu": 1, "rows": rows}))
    assert main(["--from-json", str(path)]) == 0
    plain = capsys.readouterr().out.strip().splitlines()
    assert main(["--from-json", str(path), "--epoch-s", "CR=2"]) == 0
    slower = capsys.readouterr().out.strip().splitlines()
    h = [float(line.split()[-1]) for line in plain[-2:]]
    assert h[0] == pytest.approx(4 * h[1], rel=2e-3)  # k=4 packed 4x faster (table rounds to 0.01 h)
    assert float(slower[-2].split()[-1]) > h[0]
    with pytest.raises(SystemExit):
        main(["--from-json", str(path), "--epoch-s", "XX=1"])
