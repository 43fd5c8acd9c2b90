"""LM grids through the real (embedded) Ray: `run` end to end, curves, dedup on resubmission, status,
and a data-parallel trial (Ray Train V2 TorchTrainer inside the Tune trial, gloo, 2 CPU workers)
that matches the single-process run with the same global batch.

One Ray instance for the module (startup is the slow part on 2 cores); `run` reuses it.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from grid.results.store import ResultsStore  # noqa: E402
from grid.lm.cli import run_main  # noqa: E402
from grid.run.status import status_main  # noqa: E402
from tests.helpers import embedded_ray, write_tiny_bytes_spec  # noqa: E402



@pytest.fixture(scope="module", autouse=True)
def ray_4cpu():
    # 4 logical CPUs: two single-process trials at once, or a Tune driver trial + 2 Train workers
    yield from embedded_ray(num_cpus=4)


def _write_grid(root: Path, body: str) -> Path:
    write_tiny_bytes_spec(root)
    path = root / "tiny.yaml"
    path.write_text("name: tiny\ndata: data.yaml\n" + body)
    return path


def test_run_grid_end_to_end_then_resubmit_runs_nothing(tmp_path, capsys):
    grid = _write_grid(tmp_path, """architectures:
  - {name: transformer, mixer: attention}
  - {name: gla, mixer: gla}
scales: [cpu-tiny]
recipe: {tokens: 12288, eval_every: 3, ckpt_every: 3, eval_batches: 1}
""")
    args = [str(grid), "--results", str(tmp_path / "store"), "--ray-tmp-path", str(tmp_path / "ray")]
    assert run_main(args) == 0
    out = capsys.readouterr().out
    assert "2 ok" in out and "leaderboard of grid tiny" in out
    board = out.split("leaderboard of grid tiny", 1)[1]
    assert "transformer" in board and "gla" in board and "cpu-tiny" in board

    store = ResultsStore(tmp_path / "store")
    df = store.df(suite="lm", grid="tiny")
    assert len(df) == 2 and set(df["status"]) == {"ok"} and set(df["model_id"]) == {"transformer", "gla"}
    assert all(math.isfinite(v) for v in df["val_loss"]) and (df["steps"] == 6).all()
    assert set(df["backend"]) == {"attention=fused", "gla=reference"} and (df["non_embedding_params"] > 0).all()
    assert set(df["scale"]) == {"cpu-tiny"} and set(df["hybrid"]) == {"pure"}
    assert not [c for c in df.columns if c.startswith("curve")]  # curve points stay out of the row

    curves = store.query("SELECT * FROM curves ORDER BY trial_key, step")
    assert set(curves["trial_key"]) == set(df["trial_key"])
    assert {"trial_key", "step", "tokens", "train_loss", "val_loss", "lr", "flops"} <= set(curves.columns)
    for key, part in curves.groupby("trial_key"):
        assert part["step"].tolist() == [1, 2, 3, 4, 5, 6]
        assert part["val_loss"].notna().tolist() == [False, False, True, False, False, True]
        final = df[df["trial_key"] == key].iloc[0]
        assert part["val_loss"].iloc[-1] == pytest.approx(final["val_loss"])
        assert part["tokens"].iloc[-1] == final["tokens_seen"] == 6 * 2048

    # resubmission: everything is in the store, nothing runs
    assert run_main(args) == 0
    out = capsys.readouterr()
    assert "2 already ok" in out.err and "0 to run" in out.err
    assert "2 already in the store, 0 ok" in out.out

    assert status_main(["--results", str(tmp_path / "store"), "--ray-tmp-path", str(tmp_path / "ray")]) == 0
    status = capsys.readouterr().out
    line = next(ln for ln in status.splitlines() if ln.startswith("lm ") and " tiny " in ln)
    assert line.split()[2] == "2" and "no unfinished trials" in status


def test_data_parallel_trial_matches_single_process(tmp_path):
    from grid.data import prepare
    from grid.lm.gridspec import expand, load_grid
    from grid.lm.prepare_grid import lm_trial_specs
    from grid.lm.trial import run_lm
    from grid.run.runner import run_trials

    grid = _write_grid(tmp_path, """architectures: [{name: gla, mixer: gla}]
scales: [cpu-tiny]
recipe: {tokens: 12288, eval_every: 3, ckpt_every: 3, eval_batches: 1, micro_batch_size: 4}
""")
    spec = load_grid(grid)
    manifest = prepare(tmp_path / "data.yaml", verbose=False)
    (trial,) = expand(spec, 257, manifest["content_hash"])
    (ts,), _, _ = lm_trial_specs([trial], spec, manifest["dir"], n_gpu=0)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a 1-CPU Ray worker
    try:
        single = run_lm(ts.config)  # one process, global batch 16 in 4 micro-batches
    finally:
        torch.set_num_threads(threads)

    # the same trial on 2 data-parallel Train workers (8 rows each, 2 micro-batches), gloo on CPU
    ddp = ts.model_copy(update={"config": {**ts.config, "ddp": {"workers": 2, "use_gpu": False}},
                                "runtime": sorted({*ts.runtime, "ddp"})})  # the runtime block: same trial_key
    store = ResultsStore(tmp_path / "store")
    summary = run_trials([ddp], store=store, experiment="ddp", storage_dir=tmp_path / "ray", progress=False,
                         max_concurrent=1)
    assert summary.n_ok == 1, store.df()[["status", "error"]].to_dict("records")
    row = store.df().iloc[0]
    assert row["world_size"] == 2 and row["steps"] == single["steps"] == 6
    assert row["tokens_seen"] == single["tokens_seen"] == 6 * 2048
    for key in ("train_loss", "val_loss"):
        assert row[key] == pytest.approx(single[key], rel=1e-4), key
    curve = store.query("SELECT step, val_loss FROM curves ORDER BY step")
    assert curve["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert curve["val_loss"].iloc[-1] == pytest.approx(single["val_loss"], rel=1e-4)
