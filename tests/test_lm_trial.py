"""The LM trial function in-process (no Ray): resume equivalence, divergence guard, curve points, env check."""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pytest

from grid.lm import trial as lm_trial
from grid.lm.gridspec import GridSpec, expand
from grid.lm.trial import check_env, run_lm, throughput_warmup_steps
from grid.results.schema import CURVE_PREFIX
from tests.helpers import write_tiny_bytes_spec


def _tiny_data(root: Path) -> dict:
    from grid.data import prepare

    return prepare(write_tiny_bytes_spec(root), verbose=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _tiny_data(tmp_path_factory.mktemp("lmdata"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is as fast, and immune to a busy machine's oversubscription."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _config(data, mixer="gla", steps=8, **recipe) -> dict:
    recipe = {"tokens": 2048 * steps, "eval_every": 4, "ckpt_every": 4, "eval_batches": 1, **recipe}
    spec = GridSpec.model_validate({"name": "t", "data": "unused.yaml", "scales": ["cpu-tiny"], "recipe": recipe,
                                    "architectures": [{"name": mixer, "mixer": mixer}]})
    (t,) = expand(spec, 257, data["content_hash"])
    return {**t.config, "data_dir": data["dir"]}


class Crash(RuntimeError):
    pass


class FakeCtx:
    """The runner's ctx: keeps reports, copies reported checkpoints (as Tune does), may crash after one."""

    def __init__(self, root: Path, restored: str | None = None, crash_after_step: int | None = None):
        self.root, self.restored, self.crash_after_step = root, restored, crash_after_step
        self.reports: list[dict] = []
        self.saved: str | None = None

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            dst = self.root / f"ckpt-{len(self.reports)}"
            shutil.copytree(checkpoint_dir, dst)
            self.saved = str(dst)
            if metrics.get(CURVE_PREFIX + "step") == self.crash_after_step:
                raise Crash("killed after the checkpoint")

    def checkpoint_dir(self):
        return self.restored

    def curve(self) -> dict[int, dict]:
        out = {}
        for r in self.reports:
            point = {k[len(CURVE_PREFIX):]: v for k, v in r.items() if k.startswith(CURVE_PREFIX)}
            if point:
                out[point["step"]] = point
        return out


def test_resume_equals_straight_run(data, tmp_path):
    # 2N steps straight == N steps, killed, resumed for N more (N = 3; 2 micro-batches per step)
    cfg = _config(data, steps=6, eval_every=3, ckpt_every=3, micro_batch_size=8)
    straight_ctx = FakeCtx(tmp_path / "a")
    straight = run_lm(cfg, straight_ctx)
    assert straight["status"] == "ok" and straight["steps"] == 6 and straight["tokens_seen"] == 6 * 2048

    first = FakeCtx(tmp_path / "b", crash_after_step=3)
    with pytest.raises(Crash):
        run_lm(cfg, first)
    second = FakeCtx(tmp_path / "c", restored=first.saved)
    resumed = run_lm(cfg, second)
    assert resumed["resumed_from"] == 3 and resumed["steps"] == 6
    for key in ("val_loss", "train_loss"):
        assert resumed[key] == pytest.approx(straight[key], rel=1e-5, abs=1e-6), key
    # the resumed attempt re-reports the curve restored from the checkpoint: nothing is lost
    a, b = straight_ctx.curve(), second.curve()
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert b[step]["train_loss"] == pytest.approx(a[step]["train_loss"], rel=1e-5)
        assert ("val_loss" in b[step]) == ("val_loss" in a[step]) == (step % 3 == 0)


def test_final_metrics_and_curve_points(data, tmp_path):
    ctx = FakeCtx(tmp_path)
    out = run_lm(_config(data, mixer="attention", steps=4), ctx)
    assert out["status"] == "ok" and out["diverged_step"] is None
    assert math.isfinite(out["val_loss"]) and out["val_ppl"] == pytest.approx(math.exp(out["val_loss"]))
    assert out["backend"] == "attention=fused" and out["device"] == "cpu" and out["mfu"] is None
    assert out["tokens_per_s"] > 0 and out["peak_mem_gib"] > 0 and out["non_embedding_params"] > 0
    assert out["train_flops"] == pytest.approx(out["train_flops_per_token"] * out["tokens_seen"])
    curve = ctx.curve()
    assert sorted(curve) == [1, 2, 3, 4]
    last = curve[4]
    assert set(last) == {"step", "tokens", "train_loss", "val_loss", "lr", "flops"}
    assert last["tokens"] == 4 * 2048 and last["val_loss"] == pytest.approx(out["val_loss"])
    assert last["flops"] == pytest.approx(out["train_flops"])


def test_nan_loss_ends_trial_as_diverged(data, tmp_path, monkeypatch):
    real, calls = lm_trial.lm_loss, [0]

    def nan_from_third_step(m, x, y):
        calls[0] += 1
        loss = real(m, x, y)
        return loss * float("nan") if calls[0] >= 3 else loss

    monkeypatch.setattr(lm_trial, "lm_loss", nan_from_third_step)
    out = run_lm(_config(data), FakeCtx(tmp_path))
    assert out["status"] == "diverged" and out["diverged_step"] == 2 and out["steps"] == 2
    assert "non-finite" in out["error"] and math.isnan(out["val_loss"])


def test_exploding_loss_trips_the_guard(data, tmp_path, monkeypatch):
    real, calls = lm_trial.lm_loss, [0]

    def explode(m, x, y):
        calls[0] += 1
        loss = real(m, x, y)
        return loss * 10 if calls[0] >= 4 else loss

    monkeypatch.setattr(lm_trial, "lm_loss", explode)
    out = run_lm(_config(data, warmup_steps=1, divergence_factor=4.0), FakeCtx(tmp_path))
    assert out["status"] == "diverged" and out["diverged_step"] == 3
    assert "guard" in out["error"]


def test_final_report_drops_the_stale_curve_point():
    """ctx.last_metrics keeps the last report's curve/* keys; the final report to Tune must not re-send them."""
    from grid.run.context import final_report

    last = {CURVE_PREFIX + "step": 6, CURVE_PREFIX + "val_loss": 2.5, "val_loss": 2.5, "steps": 6, "note": "x",
            "none": None}
    assert final_report(last) == {"val_loss": 2.5, "steps": 6, "note": "x"}


def test_env_profile_is_checked_at_start(tmp_path, monkeypatch):
    from grid.env.profiles import ProfileError

    prof = tmp_path / "impossible.txt"
    prof.write_text("# lingrid environment profile: impossible\n# architectures: all\ntorch==1.0.0\n")
    cfg = {"env_profile": str(prof)}
    monkeypatch.delenv("LINGRID_SKIP_ENV_CHECK", raising=False)
    with pytest.raises(ProfileError, match="torch: required ==1.0.0"):
        run_lm(cfg, None)  # fails before touching data or model
    monkeypatch.setenv("LINGRID_SKIP_ENV_CHECK", "1")
    check_env(cfg)  # skipped


def test_throughput_window_sizes():
    assert [throughput_warmup_steps(n) for n in (0, 19, 20, 100, 199, 5000)] == [0, 0, 2, 10, 19, 20]


def test_steady_state_throughput_leaves_out_slow_first_steps(data, tmp_path, monkeypatch):
    # the first step stands in for fla's kernel compile/autotune: slow once, then fast
    calls = [0]
    real = lm_trial.lm_loss

    def slow_first(model, x, y):
        calls[0] += 1
        if calls[0] == 1:
            time.sleep(1.5)
        return real(model, x, y)

    monkeypatch.setattr(lm_trial, "lm_loss", slow_first)
    out = run_lm(_config(data, mixer="attention", steps=20, eval_every=20, ckpt_every=20), FakeCtx(tmp_path))
    assert out["status"] == "ok" and out["throughput_from_step"] == 2
    assert out["tokens_per_s"] > 1.2 * out["tokens_per_s_all_steps"]


def test_compile_is_part_of_the_trial_and_stays_eager_on_cpu(data, tmp_path):
    eager, compiled = _config(data, steps=2), _config(data, steps=2, compile=True)
    assert eager["recipe"]["compile"] is False and compiled["recipe"]["compile"] is True
    out = run_lm(compiled, FakeCtx(tmp_path))
    assert out["status"] == "ok" and out["compiled"] is False  # CPU: no torch.compile, recorded as such


def test_a_trial_planned_for_a_gpu_refuses_to_train_on_a_cpu(data):
    """The device class is part of the trial_key: a 'cuda' trial that lands on a CPU must not write a CPU row
    under its key (that row would make the GPU run count as done). Not retried: another attempt cannot fix it."""
    from grid.run.context import PermanentError

    with pytest.raises(PermanentError, match="planned for device class 'cuda'"):
        run_lm({**_config(data), "device": "cuda"}, None)
