"""`python -m grid results show` on rows as wide as real ones: curated columns per suite, no empty
columns, fits 120 columns; --columns and --all for more."""
from __future__ import annotations

import pytest

from grid.results.cli import main
from grid.results.store import ResultsStore

PROVENANCE = {"torch": "2.13.0", "triton": "3.9.0", "fla": "0.6.0", "ray": "2.60.0", "git_sha": "a" * 40,
              "env_profile": None, "autotune": "full", "config_json": '{"model": {"d_model": 64}}' * 20}


def _lm(i: int) -> dict:
    return {"trial_key": f"{i:016x}", "status": "ok", "model_id": ["gla", "deltanet", "transformer"][i % 3],
            "mixer": ["gla", "deltanet", "attention"][i % 3], "hybrid": "3:1", "scale": "cpu-tiny", "seed": 0,
            "val_loss": 2.1 + i / 100, "val_ppl": 8.2 + i, "tokens_per_s": 5027.3 * (i + 1), "mfu": None,
            "peak_mem_gib": 0.77, "train_loss": 2.0, "steps": 195, "tokens_seen": 399360,
            "non_embedding_params": 218320, "total_params": 251216, "state_size": 1024, "train_flops_per_token": 1.3e6,
            "backend": "gla=reference,attention=reference", "device": "cpu", "wall_s": 65.2, "lr": 3e-3, "wd": 0.1,
            **PROVENANCE, **{f"extra_metric_{k}": float(k) for k in range(12)}}


def _mad(i: int, epochs: int = 200) -> dict:
    return {"trial_key": f"m{i:015x}", "status": "error" if i == 0 else "ok", "model_id": "gla", "mixer": "gla",
            "task": "CR", "setting": f"seq_len={128 * (i + 1)}", "lr": 1e-3, "wd": 0.1, "epochs": epochs,
            "max_train_examples": 0, "acc": None if i == 0 else 0.9 + i / 100, "best_epoch": 40 + i,
            "epochs_run": 60 + i, "n_params": 200000, "batch_size": 128, "min_lr": 1e-6, "metric": "macro",
            "wall_s": 120.5, "error": "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory. "
            "Tried to allocate 20.00 GiB (GPU 0; 79.10 GiB total capacity)" if i == 0 else None,
            **PROVENANCE, **{f"cuda_graph_{k}": k for k in range(10)}}


@pytest.fixture()
def store(tmp_path):
    s = ResultsStore(tmp_path / "store")
    for i in range(3):
        s.write_row(_lm(i), suite="lm", grid="quickstart")
        s.write_row(_mad(i), suite="mad", grid="mad")
    return s


def _table_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln and not ln.startswith(("results in", "(", "suite "))]


def test_show_prints_curated_columns_per_suite_that_fit(store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["show", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "suite lm, grid quickstart, hybrid 3:1, scale cpu-tiny, seed 0 (3 rows)" in out  # shared values: once
    assert "suite mad, model_id gla, task CR, lr 0.001, wd 0.1, epochs 200 (3 rows)" in out
    assert max(len(ln) for ln in out.splitlines()[1:]) <= 120  # (the first line names the store)
    lm, mad = out.split("suite mad, model_id gla, task CR, lr 0.001, wd 0.1, epochs 200 (3 rows):")
    lm_head = _table_lines(lm)[0].split()
    assert lm_head[:2] == ["trial_key", "status"] and {"model_id", "val_loss", "tokens_per_s"} <= set(lm_head)
    assert "mfu" not in lm_head  # empty for every row: left out
    assert not any(c.startswith(("extra_metric", "torch", "config_json")) for c in lm_head)
    assert "15,082" in lm and "0000000000000002" in lm  # numbers readable, keys whole
    mad_head = _table_lines(mad)[0].split()
    assert mad_head == ["trial_key", "status", "setting", "acc", "best_epoch", "epochs_run", "wall_s", "error"]
    assert "RuntimeError: CUDA out of memory" in mad  # the error's last line, cut to fit


def test_no_header_without_a_value(store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["show", "--store", str(store.root), "--suite", "lm"]) == 0
    lines = _table_lines(capsys.readouterr().out)
    head, body = lines[0], lines[2:]
    cols = head.split()
    cells = [ln.split() for ln in body]
    for j, c in enumerate(cols):
        assert any(r[j] != "-" for r in cells), c


def test_columns_and_all(store, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["show", "--store", str(store.root), "--suite", "lm", "--columns", "model_id,total_params"]) == 0
    head = _table_lines(capsys.readouterr().out)[0].split()
    assert head == ["model_id", "total_params"]
    assert main(["show", "--store", str(store.root), "--suite", "lm", "--all"]) == 0
    head = _table_lines(capsys.readouterr().out)[0].split()
    assert "extra_metric_11" in head and "torch" in head and "mfu" not in head
    assert main(["show", "--store", str(store.root), "--columns", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "allowed" in err
