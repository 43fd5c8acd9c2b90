"""Scaling-law analysis: power-law fit, lower envelope over compute, per-architecture fits and notes."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from grid.analysis.scaling import PFLOPS_DAY, compute_curves, envelope, fit_power_law, fit_scaling


def test_fit_power_law_recovers_known_coefficients():
    c = np.geomspace(1e-4, 1e3, 40)
    beta, alpha, r2 = fit_power_law(c, 3.5 * c ** -0.08)
    assert beta == pytest.approx(3.5, abs=1e-6)
    assert alpha == pytest.approx(-0.08, abs=1e-6)
    assert r2 == pytest.approx(1.0, abs=1e-9)


def test_fit_power_law_noisy_and_errors():
    rng = np.random.default_rng(0)
    c = np.geomspace(1e-3, 1e2, 200)
    y = 3.5 * c ** -0.08 * np.exp(rng.normal(0, 0.01, c.size))
    beta, alpha, r2 = fit_power_law(c, y)
    assert beta == pytest.approx(3.5, rel=0.01) and alpha == pytest.approx(-0.08, abs=0.003) and 0.9 < r2 < 1
    with pytest.raises(ValueError, match="at least 2"):
        fit_power_law([1.0], [2.0])
    with pytest.raises(ValueError, match="positive"):
        fit_power_law([1.0, 0.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="distinct"):
        fit_power_law([2.0, 2.0], [1.0, 3.0])


# Two trials whose loss is linear in ln C (so interpolation in log C is exact) and whose curves cross
# at ln C = -10: the small model is lower before, the big one after; the small one stops at ln C = -6.
SMALL = dict(key="small", N=1e6, a=3.3, b=0.07, lo=-14.0, hi=-6.0)
BIG = dict(key="big", N=4e6, a=3.0, b=0.10, lo=-14.0, hi=-2.0)


def _trial(t, n=33):
    lnc = np.linspace(t["lo"], t["hi"], n)
    flops = np.exp(lnc) * PFLOPS_DAY
    fpt = 6.0 * t["N"]
    curve = pd.DataFrame({"trial_key": t["key"], "step": np.arange(1, n + 1), "tokens": flops / fpt,
                          "train_loss": t["a"] - t["b"] * lnc, "val_loss": None, "lr": 1e-3, "flops": flops})
    row = {"trial_key": t["key"], "status": "ok", "model_id": "gla", "mixer": "gla", "hybrid": "pure",
           "scale": t["key"], "seed": 0, "non_embedding_params": int(t["N"]), "train_flops_per_token": fpt,
           "tokens_seen": int(flops[-1] / fpt)}
    return curve, row


def _crossing_frames():
    (c1, r1), (c2, r2) = _trial(SMALL), _trial(BIG)
    return pd.concat([c1, c2], ignore_index=True), pd.DataFrame([r1, r2])


def test_envelope_picks_lower_curve_at_each_compute():
    curves, results = _crossing_frames()
    env = envelope(curves, results, n_points=41)
    assert len(env) == 41
    lnc = np.log(env["C"].to_numpy())
    assert lnc[0] == pytest.approx(-14) and lnc[-1] == pytest.approx(-2)
    small = np.where(lnc <= -6 + 1e-9, SMALL["a"] - SMALL["b"] * lnc, np.inf)
    big = BIG["a"] - BIG["b"] * lnc
    np.testing.assert_allclose(env["loss"], np.minimum(small, big), rtol=1e-9)
    expect = np.where(small < big, "small", "big")
    assert list(env["trial_key"]) == list(expect)
    assert set(env.loc[lnc < -10.01, "trial_key"]) == {"small"} and set(env.loc[lnc > -9.99, "trial_key"]) == {"big"}
    # realising size and tokens seen at that compute (D = flops / (6 N))
    n = np.where(expect == "small", SMALL["N"], BIG["N"])
    np.testing.assert_allclose(env["N"], n)
    np.testing.assert_allclose(env["D"], env["C"] * PFLOPS_DAY / (6 * n), rtol=1e-9)
    assert (env.loc[lnc > -6 + 1e-6, "n_available"] == 1).all() and (env.loc[lnc < -6 - 1e-6, "n_available"] == 2).all()
    assert env.attrs["n_trials"] == 2 and env.attrs["n_sizes"] == 2


def test_flops_fallback_from_tokens_and_skip_frac():
    curves, results = _crossing_frames()
    no_flops = curves.drop(columns="flops")
    a = compute_curves(curves, results)
    b = compute_curves(no_flops, results)
    np.testing.assert_allclose(a["C"], b["C"], rtol=1e-12)
    skipped = compute_curves(curves, results, skip_frac=0.5)
    assert skipped.groupby("trial_key")["flops"].min().gt(0.5 * a.groupby("trial_key")["flops"].max() - 1).all()
    # rows without a training loss (validation-only steps) and step-0 rows with zero compute are ignored
    extra = pd.DataFrame([{"trial_key": "small", "step": 0, "tokens": 0, "train_loss": 11.0, "flops": 0.0},
                          {"trial_key": "small", "step": 5, "tokens": 1, "train_loss": None, "val_loss": 4.0,
                           "flops": 1e9}])
    c = compute_curves(pd.concat([curves, extra], ignore_index=True), results)
    assert len(c) == len(a)


def test_seeds_are_averaged_not_minimised():
    curves, results = _crossing_frames()
    c2 = curves[curves.trial_key == "big"].assign(trial_key="big2", train_loss=lambda d: d.train_loss + 0.2)
    r2 = results[results.trial_key == "big"].assign(trial_key="big2", seed=1)
    curves2, results2 = pd.concat([curves, c2]), pd.concat([results, r2])
    env_mean = envelope(curves2, results2, n_points=41)
    env_min = envelope(curves2, results2, n_points=41, average_seeds=False)
    lnc = np.log(env_mean["C"].to_numpy())
    last = lnc > -6 + 1e-6  # only the big model (two seeds) covers this range
    np.testing.assert_allclose(env_mean.loc[last, "loss"], BIG["a"] - BIG["b"] * lnc[last] + 0.1, rtol=1e-9)
    np.testing.assert_allclose(env_min.loc[last, "loss"], BIG["a"] - BIG["b"] * lnc[last], rtol=1e-9)
    assert set(env_mean.loc[last, "trial_key"]) == {"big,big2"} and set(env_mean.loc[last, "n_trials"]) == {2}


def _law_ladder(beta=3.5, alpha=-0.08):
    """Three sizes whose curves all lie on L = beta * C^alpha, each covering a later compute range."""
    curves, rows = [], []
    for i, (n, lo, hi) in enumerate([(1e6, -12, -8), (4e6, -10, -5), (16e6, -7, -2)]):
        c = np.exp(np.linspace(lo, hi, 400))
        fpt = 6 * n
        loss = beta * c ** alpha
        curves.append(pd.DataFrame({"trial_key": f"t{i}", "step": np.arange(400), "tokens": c * PFLOPS_DAY / fpt,
                                    "train_loss": loss, "flops": c * PFLOPS_DAY}))
        rows.append({"trial_key": f"t{i}", "suite": "lm", "status": "ok", "model_id": "gdn", "mixer": "gated_deltanet",
                     "hybrid": "3:1", "scale": f"s{i}", "seed": 0, "non_embedding_params": int(n),
                     "train_flops_per_token": fpt})
    return pd.concat(curves, ignore_index=True), pd.DataFrame(rows)


def test_fit_scaling_end_to_end_recovers_law_and_notes():
    curves, results = _law_ladder()
    # a diverged trial of the same architecture, and a lone single-trial architecture
    results = pd.concat([results, pd.DataFrame([
        {"trial_key": "div", "suite": "lm", "status": "diverged", "model_id": "gdn", "hybrid": "3:1", "scale": "s1"},
        {"trial_key": "solo", "suite": "lm", "status": "ok", "model_id": "mamba", "hybrid": "pure", "scale": "s0",
         "non_embedding_params": 10**6, "train_flops_per_token": 6e6},
        {"trial_key": "m", "suite": "mad", "status": "ok", "model_id": "zzz"},
    ])], ignore_index=True)
    solo = curves[curves.trial_key == "t0"].assign(trial_key="solo")
    fits = fit_scaling(pd.concat([curves, solo], ignore_index=True), results, n_points=50)
    assert list(fits["architecture"]) == ["gdn [3:1]", "mamba"]
    g = fits.iloc[0]
    assert g.L_beta == pytest.approx(3.5, rel=1e-4) and g.L_alpha == pytest.approx(-0.08, abs=1e-4)
    assert g.n_trials == 3 and g.n_sizes == 3 and g.n_points == 50 and g.n_env_sizes >= 2
    assert np.isfinite([g.N_beta, g.N_alpha, g.D_beta, g.D_alpha]).all() and g.N_alpha > 0
    assert "excluded 1 diverged" in g.note
    m = fits.iloc[1]
    assert np.isfinite(m.L_beta) and math.isnan(m.N_alpha) and math.isnan(m.D_alpha)
    assert "one trial only" in m.note and "only 1 size" in m.note


def test_fit_scaling_without_curves_says_so():
    _, results = _law_ladder()
    fits = fit_scaling(pd.DataFrame(columns=["trial_key", "step", "tokens", "train_loss", "flops"]), results)
    assert len(fits) == 1 and math.isnan(fits.iloc[0].L_beta) and "nothing to fit" in fits.iloc[0].note


def test_fit_scaling_curves_without_compute_says_so():
    curves, results = _law_ladder()
    bare = curves.drop(columns=["flops", "tokens"])
    fits = fit_scaling(bare, results.drop(columns="train_flops_per_token"))
    assert math.isnan(fits.iloc[0].L_beta) and "no compute" in fits.iloc[0].note
