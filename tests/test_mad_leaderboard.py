"""`python -m evals.mad leaderboard` on a store where one model_id has a smoke run and a full run:
one table per protocol, each named, no traceback."""
from __future__ import annotations

import pandas as pd

from evals.mad.__main__ import main
from evals.mad.scoring import by_protocol, protocol_label
from grid.results.store import ResultsStore


def _rows(epochs: int, max_train_examples: int | None, acc: float) -> list[dict]:
    out = []
    for t in ("CR", "NR", "FR", "M", "C", "SC"):
        row = {"trial_key": f"{t}-{epochs}-{max_train_examples}", "status": "ok", "model_id": "gla", "mixer": "gla",
               "task": t, "setting": "baseline", "lr": 1e-3, "wd": 0.0, "epochs": epochs, "acc": acc}
        if max_train_examples is not None:
            row["max_train_examples"] = max_train_examples
        out.append(row)
    return out


def test_smoke_and_full_runs_of_one_model_get_a_table_each(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    for row in _rows(200, 0, 0.9) + _rows(2, 256, 0.2) + _rows(200, 256, 0.5):
        store.write_row(row, suite="mad", grid="mad")
    assert main(["leaderboard", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "under 3 protocols" in out and "not comparable" in out
    assert "protocol cosine, 200 epochs (6 runs;" in out  # rows without a protocol column are cosine rows
    assert "protocol cosine, 2 epochs, smoke run on 256 train examples (6 runs;" in out
    assert "protocol cosine, 200 epochs, smoke run on 256 train examples (6 runs;" in out
    assert "| gla | 0.900 |" in out and "| gla | 0.200 |" in out and "| gla | 0.500 |" in out
    assert main(["leaderboard", "--results", str(tmp_path), "--epochs", "2"]) == 0
    assert "0.900" not in capsys.readouterr().out


def test_rows_written_before_max_train_examples_existed_count_as_full_runs():
    df = pd.DataFrame(_rows(200, None, 0.9) + _rows(200, 0, 0.8))
    df.loc[:5, "max_train_examples"] = None
    (proto, part), = by_protocol(df)
    assert protocol_label(proto) == "protocol cosine, 200 epochs" and len(part) == 12
