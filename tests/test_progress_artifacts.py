"""What a run leaves for people to watch, on a real embedded Ray with one simulated GPU: the plain
progress lines, progress.csv (one fixed header from the first report), TensorBoard runs named by
trial label against tokens, the per-trial environment, and tiny trials sharing the GPU."""
from __future__ import annotations

import csv
import io
import struct
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from grid.results.store import ResultsStore  # noqa: E402
from grid.run.resources import decide  # noqa: E402
from grid.run.runner import run_trials  # noqa: E402
from grid.run.spec import Resources, Work, make_trial  # noqa: E402
from tests.helpers import embedded_ray  # noqa: E402

STUB = "tests.stub_trials"


@pytest.fixture(scope="module", autouse=True)
def ray_2cpu_1gpu():
    yield from embedded_ray(num_cpus=2, num_gpus=1)


def _events(path: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in a TensorBoard event file (TFRecord framing, no TensorBoard needed)."""
    from tensorboardX.proto import event_pb2

    out, data = [], path.read_bytes()
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        out += [(v.tag, ev.step, v.simple_value) for v in ev.summary.value]
        i += 12 + n + 4
    return out


def test_tiny_trials_share_the_gpu_with_first_config_kernels_and_leave_readable_artefacts(tmp_path, monkeypatch):
    monkeypatch.setenv("LINGRID_PROGRESS", "plain")
    monkeypatch.delenv("LINGRID_AUTOTUNE", raising=False)
    # the policy, as `grid run` asks it for a tiny LM trial on a cluster with one 141 GiB GPU
    d = decide(1, non_embedding_params=200_000, memory_gib=1.6, gpu_memory_gib=141)
    assert d.shared and d.gpus == 0.125 and d.env == {"LINGRID_AUTOTUNE": "first"}
    trials = [make_trial({"steps": 4, "sleep_s": 1.0, "x": i}, suite="test", grid="g",
                         trainable=f"{STUB}:learning_trial", resources=Resources(cpu=1, gpu=d.gpus),
                         columns={"model_id": m, "seed": 0}, work=Work(steps=4, tokens=4 * 512))
              for i, m in enumerate(("gla", "deltanet"))]
    trials = [t.model_copy(update={"env": d.env}) for t in trials]
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    summary = run_trials(trials, store=ResultsStore(tmp_path / "store"), experiment="art",
                         storage_dir=tmp_path / "ray")
    assert summary.n_ok == 2
    rows = ResultsStore(tmp_path / "store").df(suite="test")
    assert set(rows["autotune"]) == {"first"}  # the trial's env reached the worker before provenance
    assert set(rows["gpu_index"]) == {"0"}  # both on the one (simulated) GPU ...
    starts, ends = sorted(rows["started_at"]), sorted(rows["finished_at"])
    assert starts[1] < ends[0]  # ... at the same time

    log = err.getvalue()
    assert "gla: ok after" in log and "deltanet: ok after" in log  # one line per finished trial, by label
    assert "loss 1" in log and "eval loss 1.12" in log  # with its latest losses
    assert "tokens 4.1K/4.1K" in log  # the work-based progress

    exp = Path(summary.experiment_path)
    for key in (t.trial_key for t in trials):
        with open(exp / key / "progress.csv") as f:
            table = list(csv.DictReader(f))
        assert list(table[0]) == ["training_iteration", "time_total_s", "step", "tokens", "epoch", "train_loss",
                                  "eval_loss", "eval_acc", "runs_done", "status"]
        assert [r["step"] for r in table if r["step"]][-1] == "4"
        assert [r["train_loss"] for r in table if r["train_loss"]][:2] == ["4.0", "2.0"]
    runs = sorted(p.name for p in (exp / "tensorboard").iterdir())
    assert runs == ["deltanet", "gla"]
    scalars = [e for f in (exp / "tensorboard" / "gla").glob("events.out.tfevents.*") for e in _events(f)]
    loss = sorted((step, v) for tag, step, v in scalars if tag.startswith("train_loss"))
    assert [s for s, _ in loss] == [512, 1024, 1536, 2048]  # against tokens, not report counts
    assert {tag for tag, _, _ in scalars} == {"train_loss", "eval_loss"}
