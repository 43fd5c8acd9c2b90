"""MAD protocol: metrics (macro rules), selection, early stop, NaN runs, backbones, named archs, scoring."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import evals.mad.backbones as backbones
import evals.mad.protocol as protocol
from evals.mad.arch import arch_entry, arch_model_config, arch_names
from evals.mad.metrics import MADMetrics, batch_macro_accuracy
from evals.mad.protocol import MADRunConfig, run_mad, summarize
from evals.mad.scoring import best_per_setting, mad_table, to_markdown
from grid.models import ConfigError
from grid.models.registry import mixer_names

TINY_MODEL = dict(d_model=32, n_layers=2, mixer="attention", mixer_kwargs={"num_heads": 2},
                  ffn={"kind": "swiglu", "hidden_ratio": 4, "multiple_of": 16}, head_bias=True, backend="reference")


def tiny_setting(task="M", **kw):
    base = dict(task=task, vocab_size=16, seq_len=16, num_train_examples=64, num_test_examples=32)
    base.update(kw)
    return base


def tiny_config(tmp_path, task="M", **kw):
    cfg = dict(setting=tiny_setting(task), model=TINY_MODEL, lr=3e-3, weight_decay=0.1, epochs=3, batch_size=16,
               data_root=str(tmp_path / "data"), precision="bf16", device="cpu")
    cfg.update(kw)
    return cfg


# ------------------------------------------------------------------------------------------ metrics

def onehot_logits(preds, V):
    return torch.nn.functional.one_hot(torch.as_tensor(preds), V).float() * 10


def test_macro_accuracy_hand_cases():
    V = 5
    # class 0: recall 1/2, class 1: recall 1/1; the prediction 2 at the ignored position does not count
    t = torch.tensor([0, 0, 1, -100])
    p = torch.tensor([0, 1, 1, 2])
    assert batch_macro_accuracy(p, t, V).item() == pytest.approx(0.75)
    # class 3 is predicted but never a target: it counts, with recall 0 -> (3/4 + 0) / 2
    t = torch.tensor([0, 0, 0, 0])
    p = torch.tensor([0, 0, 0, 3])
    assert batch_macro_accuracy(p, t, V).item() == pytest.approx(0.375)
    # no valid target at all: 0 (torchmetrics' safe divide)
    assert batch_macro_accuracy(torch.tensor([1, 2]), torch.tensor([-100, -100]), V).item() == 0.0


def test_metrics_batch_weighting_micro_and_ppl():
    V = 4
    m = MADMetrics()
    # batch 1 (2 rows): targets [[0,1],[1,-100]], preds [[0,1],[2,3]] -> classes 0:1/1, 1:1/2, 2: predicted only -> 0
    m.update(onehot_logits([[0, 1], [2, 3]], V), torch.tensor([[0, 1], [1, -100]]))
    a1 = (1 + 0.5 + 0) / 3
    # batch 2 (1 row): all right -> 1.0
    m.update(onehot_logits([[3, 3]], V), torch.tensor([[3, 3]]))
    out = m.compute()
    assert out["acc"] == pytest.approx((2 * a1 + 1 * 1.0) / 3)
    assert out["acc_micro"] == pytest.approx(4 / 5)
    assert out["n_targets"] == 5
    u = MADMetrics()  # uniform logits: CE = log V, ppl = V
    u.update(torch.zeros(3, 2, V), torch.tensor([[0, 1], [2, -100], [3, 3]]))
    assert u.compute()["loss"] == pytest.approx(math.log(V)) and u.compute()["ppl"] == pytest.approx(V)


def brute_macro(p, t, V):
    keep = [(a, b) for a, b in zip(p, t) if b != -100]
    classes = {b for _, b in keep} | {a for a, _ in keep}
    rec = []
    for c in classes:
        sup = sum(1 for _, b in keep if b == c)
        rec.append(sum(1 for a, b in keep if a == b == c) / sup if sup else 0.0)
    return sum(rec) / len(rec) if rec else 0.0


def test_macro_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        V = int(torch.randint(2, 9, (1,), generator=g))
        t = torch.randint(0, V, (30,), generator=g)
        t[torch.rand(30, generator=g) < 0.3] = -100
        p = torch.randint(0, V, (30,), generator=g)
        assert batch_macro_accuracy(p, t, V).item() == pytest.approx(brute_macro(p.tolist(), t.tolist(), V))


# -------------------------------------------------------------------------------------- selection

def rec(epoch, acc, ppl, micro=None):
    return {"epoch": epoch, "test_acc": acc, "test_ppl": ppl, "test_loss": math.log(ppl) if ppl > 0 else ppl,
            "test_acc_micro": micro if micro is not None else acc, "train_loss": 1.0 / (epoch + 1)}


def test_selection_min_test_perplexity():
    hist = [rec(0, 0.2, 3.0), rec(1, 0.6, 1.5, 0.65), rec(2, 0.9, 2.0), rec(3, 0.7, 1.5), rec(4, 0.8, float("nan"))]
    s = summarize(hist, stopped_early=False)
    assert (s["acc"], s["best_epoch"], s["acc_micro"], s["ppl"]) == (0.6, 1, 0.65, 1.5)  # first of the tied minima
    assert (s["acc_best"], s["acc_last"], s["epochs_run"], s["stopped_early"]) == (0.9, 0.8, 5, False)


# ----------------------------------------------------------------------------------------- runs

class Ctx:
    def __init__(self):
        self.reports = []

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append(dict(metrics))


def test_tiny_run_end_to_end(tmp_path):
    ctx = Ctx()
    out = run_mad(tiny_config(tmp_path), ctx)
    assert out["status"] == "ok" and out["nan"] is False
    assert out["epochs_run"] == 3 and len(ctx.reports) == 3 and [r["epoch"] for r in ctx.reports] == [0, 1, 2]
    assert out["steps"] == 3 * 4 and out["steps_per_epoch"] == 4
    assert 0.0 <= out["acc"] <= 1.0 and out["acc_best"] >= out["acc"] and math.isfinite(out["ppl"])
    sel = min(ctx.reports, key=lambda r: r["test_ppl"])
    assert out["acc"] == sel["test_acc"] and out["best_epoch"] == sel["epoch"]
    assert out["precision"] == "fp32" and out["task"] == "M" and out["epochs"] == 3 and out["wd"] == 0.1
    assert out["lr"] == 3e-3 and out["metric"] == "macro-per-batch" and out["n_params"] > 0
    # same seed, same everything -> identical numbers; compile is a GPU option, which CPU runs ignore
    again = run_mad({**tiny_config(tmp_path), "compile": True})
    assert again["acc"] == out["acc"] and again["loss"] == out["loss"]
    assert out["compiled"] is False and again["compiled"] is False


def _fake_evals(monkeypatch, accs, ppls):
    accs, ppls = iter(accs), iter(ppls)

    def fake_eval(model, x, y, bs, row_fn=None):
        return {"acc": next(accs), "acc_micro": 0.5, "ppl": next(ppls), "loss": 0.1}

    monkeypatch.setattr(protocol, "evaluate_split", fake_eval)


def test_early_stop_at_0999(tmp_path, monkeypatch):
    _fake_evals(monkeypatch, [0.5, 0.9991, 0.2], [3.0, 2.0, 1.0])
    out = run_mad(tiny_config(tmp_path, epochs=5))
    assert out["stopped_early"] and out["epochs_run"] == 2 and out["steps"] == 2 * 4
    assert out["acc"] == 0.9991 and out["best_epoch"] == 1


@pytest.mark.parametrize("proto,stops", [("madlab", False), ("cosine", True)])
def test_stop_threshold_is_strict_under_madlab(tmp_path, monkeypatch, proto, stops):
    """Lightning's EarlyStopping stops on acc > 0.999 (torch.gt); the cosine protocol kept >=."""
    _fake_evals(monkeypatch, [0.5, 0.999, 0.2, 0.3], [3.0, 2.0, 1.0, 1.5])
    out = run_mad(tiny_config(tmp_path, epochs=4, protocol=proto))
    assert out["stopped_early"] is stops and out["epochs_run"] == (2 if stops else 4)


def _nan_at_step(monkeypatch, n):
    from evals.mad import protocol

    real = backbones.mad_loss
    calls = {"n": 0}

    def loss(model, x, y):
        calls["n"] += 1
        value = real(model, x, y)
        return value * float("nan") if calls["n"] == n + 1 else value

    monkeypatch.setattr(protocol, "mad_loss", loss)  # the loss MADTask trains with


def test_nan_run_scores_zero_under_cosine(tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 5)
    out = run_mad(tiny_config(tmp_path, protocol="cosine"))
    assert out["status"] == "nan" and out["nan"] is True and out["acc"] == 0.0 and out["protocol"] == "cosine"
    assert out["diverged_step"] == 5 and out["epochs_run"] == 1 and "non-finite" in out["error"]
    assert 0.0 <= out["acc_pre_nan"] <= 1.0
    rows = pd.DataFrame([{**out, "setting": "s1"}, {**out, "setting": "s1", "status": "ok", "acc": 0.4, "lr": 1e-4},
                         {**out, "setting": "s2"}])
    best = best_per_setting(rows)
    assert best["acc"].tolist() == [0.4, 0.0] and best["n_nan"].tolist() == [1, 1]


def test_nan_run_reports_pre_divergence_best_under_madlab(tmp_path, monkeypatch):
    """mad-lab keeps the min-test-perplexity checkpoint (NaN ranks as +inf): a run that diverges in epoch 1
    reports epoch 0's accuracy, finite and scored, and is flagged."""
    ctx = Ctx()
    _nan_at_step(monkeypatch, 5)  # 4 steps per epoch: epoch 0 is evaluated, epoch 1 diverges
    out = run_mad(tiny_config(tmp_path), ctx)
    assert out["protocol"] == "madlab" and out["status"] == "ok" and out["nan"] is True
    assert out["diverged_step"] == 5 and "non-finite" in out["error"]
    assert len(ctx.reports) == 1 and out["acc"] == ctx.reports[0]["test_acc"] == out["acc_pre_nan"]
    assert out["best_epoch"] == 0 and math.isfinite(out["ppl"])


def test_never_finite_run_is_dropped_under_madlab(tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 0)
    out = run_mad(tiny_config(tmp_path))
    assert out["status"] == "nan" and out["nan"] is True and math.isnan(out["acc"]) and out["epochs_run"] == 0
    ok = {**out, "status": "ok", "acc": 0.4, "nan": False}
    rows = pd.DataFrame([{**out, "setting": "s1"}, {**ok, "setting": "s1"}, {**out, "setting": "s2"}])
    best = best_per_setting(rows).set_index("setting")
    assert best.loc["s1", "acc"] == 0.4 and math.isnan(best.loc["s2", "acc"])  # dropped, not scored 0
    assert best["n_nan"].tolist() == [1, 1]
    table = mad_table(rows)
    assert table.loc[out["model_id"], "M"] == pytest.approx(0.4) and table.loc[out["model_id"], "n_settings"] == 1


def test_madlab_lr_is_constant_at_every_step(tmp_path, monkeypatch):
    seen = []
    real = protocol.build_adamw

    def recording(*a, **kw):
        opt = real(*a, **kw)
        step = opt.step

        def recorded_step(*sa, **skw):
            seen.append([g["lr"] for g in opt.param_groups])
            return step(*sa, **skw)

        opt.step = recorded_step
        return opt

    monkeypatch.setattr(protocol, "build_adamw", recording)
    run_mad(tiny_config(tmp_path, epochs=4))
    assert len(seen) == 4 * 4 and all(lrs == [3e-3] for lrs in seen)
    seen.clear()
    run_mad(tiny_config(tmp_path, epochs=4, protocol="cosine"))
    per_epoch = [seen[i][0] for i in range(0, 16, 4)]
    assert per_epoch[0] == 3e-3 and per_epoch == sorted(per_epoch, reverse=True) and per_epoch[3] < 3e-3
    assert all(seen[i] == seen[i - i % 4] for i in range(16))  # stepped per epoch, constant within one


def test_compression_uses_autoencoder(tmp_path):
    cfg = tiny_config(tmp_path, task="C", epochs=1)
    out = run_mad(cfg)
    assert out["status"] == "ok" and out["task"] == "C"
    mcfg = MADRunConfig.model_validate(cfg).model_cfg(16)
    ae = backbones.build_backbone(mcfg, "C", 16)
    assert isinstance(ae, backbones.AutoEncoder) and ae.encoder.lm_head is None
    ids = torch.randint(0, 16, (2, 16))
    assert ae(ids).shape == (2, 16, 16)
    # madlab: the decoder sees the input only through the RAW residual stream at the last position (mad-lab
    # has no encoder norm), plus mad-lab's sin-then-cos table
    assert ae.encoder.norm is None
    ae.eval()
    with torch.no_grad():
        h = ae.encoder.residual(ids)[:, -1]
        manual = ae.head(ae.head_norm(ae.decoder(h[:, None, :] + madlab_table(16, 32)[None])))
        torch.testing.assert_close(ae(ids), manual)
    # cosine (the pre-madlab behaviour): final-normed stream, interleaved table
    old = backbones.build_backbone(mcfg, "C", 16, "cosine").eval()
    with torch.no_grad():
        h = old.encoder.hidden(ids)[:, -1]
        manual = old.head(old.head_norm(old.decoder(h[:, None, :] + old.positions[None])))
        torch.testing.assert_close(old(ids), manual)
    assert not torch.equal(old.positions, ae.positions)


def madlab_table(length, dim):
    """mad-lab's posemb_sincos_1d written out by hand: position p, channel c < dim/2 is
    sin(p * 10000^(-c / (dim/2 - 1))); channel dim/2 + c is the cosine of the same angle."""
    half = dim // 2
    t = torch.zeros(length, dim)
    for p in range(length):
        for c in range(half):
            angle = p * math.exp(-c * math.log(10000) / (half - 1))
            t[p, c], t[p, half + c] = math.sin(angle), math.cos(angle)
    return t


def test_run_config_validation(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        MADRunConfig.model_validate({**tiny_config(tmp_path), "arch": "transformer"})
    with pytest.raises(ValueError, match="extra"):
        MADRunConfig.model_validate({**tiny_config(tmp_path), "learning_rate": 1.0})
    with pytest.raises(ValueError):
        MADRunConfig.model_validate({**tiny_config(tmp_path), "setting": {"task": "nope"}})
    with pytest.raises(ConfigError, match="vocab_size"):
        MADRunConfig.model_validate({**tiny_config(tmp_path), "model": {**TINY_MODEL, "vocab_size": 99}}).model_cfg(16)


# ------------------------------------------------------------------------------------ backbones/arch

def test_mad_backbone_shape():
    cfg = arch_model_config("transformer", vocab_size=16, seq_len=127)
    assert (cfg.d_model, cfg.n_layers, cfg.ffn.inner(128), cfg.head_bias, cfg.tie_embeddings) == (128, 2, 352, True, False)
    assert cfg.mixer == "attention" and cfg.resolved_mixer_kwargs()["num_heads"] == 2 and cfg.context == 127
    model = backbones.build_backbone(cfg, "CR", 127)
    n = sum(p.numel() for p in model.parameters())
    assert 395_000 < n < 415_000  # mad-lab's attention backbone at V=16: ~407k
    assert arch_entry("transformer-window-128")["mixer_kwargs"]["window_size"] == 128


def test_unknown_arch_lists_names():
    with pytest.raises(ConfigError) as e:
        arch_model_config("transfomer", 16, 128)
    assert "transformer" in str(e.value) and "gla" in str(e.value)


@pytest.mark.parametrize("arch", arch_names())
def test_every_registered_arch_validates(arch):
    entry = arch_entry(arch)
    if entry["mixer"] not in mixer_names():
        pytest.skip(f"mixer {entry['mixer']!r} is not registered yet")
    cfg = arch_model_config(arch, vocab_size=16, seq_len=128)
    assert cfg.d_model == 128


# ----------------------------------------------------------------------------------------- scoring

def rows(model_id, task, setting, accs, epochs=200, statuses=None):
    grid = [(lr, wd) for lr in (1e-4, 5e-4, 1e-3) for wd in (0.0, 0.1)]
    statuses = statuses or ["ok"] * len(accs)
    return [dict(model_id=model_id, task=task, setting=setting, lr=lr, wd=wd, status=st, acc=a, epochs=epochs)
            for (lr, wd), a, st in zip(grid, accs, statuses)]


def full_table_df():
    data = []
    for i, task in enumerate(["CR", "NR", "FR", "M", "C", "SC"]):
        data += rows("A", task, "baseline", [0.1, 0.2, 0.9, 0.3, 0.4, 0.5])
        data += rows("A", task, "vocab_size=32", [0.5, 0.1 * i, 0.0, 0.0, 0.0, 0.0])
        data += rows("B", task, "baseline", [1.0] * 6)
        data += rows("B", task, "vocab_size=32", [float("nan")] * 6, statuses=["nan"] * 6)
    return pd.DataFrame(data)


def test_scoring_best_of_six_and_means():
    table = mad_table(full_table_df())
    assert list(table.columns[:7]) == ["CR", "NR", "FR", "M", "C", "SC", "avg"]
    assert table.loc["A", "CR"] == pytest.approx((0.9 + 0.5) / 2)
    assert table.loc["A", "SC"] == pytest.approx((0.9 + 0.5) / 2)
    assert table.loc["A", "avg"] == pytest.approx(0.7)
    # B: an all-NaN setting counts as 0 (not dropped) and is flagged
    assert table.loc["B", "CR"] == pytest.approx(0.5) and table.loc["B", "avg"] == pytest.approx(0.5)
    assert table.loc["B", "n_nan"] == 36 and table.loc["A", "n_nan"] == 0
    assert table.loc["A", "n_settings"] == 12 and table.loc["A", "n_runs"] == 72
    assert list(table.index) == ["A", "B"]  # sorted by avg
    best = best_per_setting(full_table_df())
    a_cr = best[(best.model_id == "A") & (best.task == "CR") & (best.setting == "baseline")].iloc[0]
    assert (a_cr["acc"], a_cr["lr"], a_cr["wd"]) == (0.9, 5e-4, 0.0)
    md = to_markdown(table)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| model_id | CR | NR | FR | M | C | SC | avg |")
    assert lines[2].startswith("| A | 0.700 |") and len(lines) == 4


def test_scoring_partial_tasks_and_names():
    df = pd.DataFrame(rows("A", "in-context-recall", "baseline", [0.3] * 6))
    table = mad_table(df)
    assert table.loc["A", "CR"] == pytest.approx(0.3) and np.isnan(table.loc["A", "avg"])
    assert "| A | 0.300 | - |" in to_markdown(table)


def test_scoring_refuses_mixed_protocols():
    df = pd.DataFrame(rows("A", "CR", "baseline", [0.3] * 6) + rows("A", "CR", "seq_len=256", [0.3] * 6, epochs=20))
    with pytest.raises(ValueError, match=r"'A' mixes epochs values \[20, 200\]"):
        mad_table(df)
    with pytest.raises(ValueError, match="lack column"):
        mad_table(df.drop(columns=["epochs"]))


def test_run_mad_metrics_do_not_clash_with_runner_columns(tmp_path):
    """The Ray runner rejects metric names it fills in itself; run_mad must never return one."""
    from grid.results.schema import RUNNER_COLUMNS
    from grid.run.context import TUNE_RESERVED
    from evals.mad.protocol import run_mad
    from evals.mad.settings import MADSetting

    setting = MADSetting(task="memorization", vocab_size=16, seq_len=8, num_train_examples=16, num_test_examples=16)
    out = run_mad(dict(setting=setting.model_dump(), arch="transformer", epochs=1, batch_size=8,
                       data_root=str(tmp_path), device="cpu"))
    clash = (set(out) - {"status", "error"}) & (set(RUNNER_COLUMNS) | TUNE_RESERVED)
    assert not clash, clash


def test_max_train_examples_limits_training_and_is_recorded(tmp_path):
    from evals.mad.protocol import run_mad
    from evals.mad.settings import MADSetting

    setting = MADSetting(task="memorization", vocab_size=16, seq_len=8, num_train_examples=64, num_test_examples=16)
    base = dict(setting=setting.model_dump(), arch="transformer", epochs=1, batch_size=8, data_root=str(tmp_path),
                device="cpu")
    full, small = run_mad(base), run_mad({**base, "max_train_examples": 16})
    assert full["steps_per_epoch"] == 8 and small["steps_per_epoch"] == 2
    assert full["max_train_examples"] == 0 and small["max_train_examples"] == 16


# ------------------------------------------------------------------------------------------ packed

def test_packed_runs_match_solo_runs(tmp_path):
    """Two runs trained at once by threads of one process (a pack) give exactly the numbers they give alone:
    same seed -> same initial weights even though both threads seed and build (under protocol._SETUP_LOCK)."""
    from grid.run.pack import make_pack, run_members
    from grid.run.spec import make_trial

    configs = [tiny_config(tmp_path, lr=lr, epochs=2) for lr in (3e-3, 1e-3)]
    trials = [make_trial(c, suite="mad", grid="t", trainable="evals.mad.protocol:run_mad") for c in configs]
    rows = run_members(make_pack(trials), {})
    assert [r["trial_key"] for r in rows] == [t.trial_key for t in trials]
    assert all(r["status"] == "ok" and r["error"] is None for r in rows), [r.get("error") for r in rows]
    packed = [r["metrics"] for r in rows]
    solo = [run_mad(c) for c in configs]
    assert packed[0]["loss"] != packed[1]["loss"]  # the two lrs really train differently
    for p, s in zip(packed, solo):
        assert (p["loss"], p["acc"], p["train_loss"], p["ppl"]) == (s["loss"], s["acc"], s["train_loss"], s["ppl"])
        assert p["lr"] == s["lr"] and p["epochs_run"] == s["epochs_run"] == 2
        assert p["epoch"] == 1 and p["test_loss"] > 0  # the last ctx.report (MemberContext) is in the row too


def test_mad_loss_is_compiled_only_around_a_compiled_model(monkeypatch):
    """A compiled model's loss goes through the compiled cross-entropy (same value); an eager one's not."""
    calls = []

    def fake_compiled(logits, y):
        calls.append(tuple(logits.shape))
        return backbones.token_cross_entropy(logits, y)

    monkeypatch.setattr(backbones, "compiled_cross_entropy", lambda: fake_compiled)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(2, 5, 4), torch.tensor([[0, 1, 2, -100, 1], [-100, -100, 2, 0, 1]])
    eager = backbones.mad_loss(model, x, y)
    assert calls == []
    model._compiled_call_impl = model._call_impl  # what model.compile() sets, minus the compiler
    assert backbones.mad_loss(model, x, y) == eager and calls == [(2, 5, 3)]
