"""`python -m grid results rekey` on a store written by main at 72aa131 (before one trial-key rule):
tests/data/store-72aa131 holds what that code wrote for a cosine and a madlab MAD run of gla (M baseline,
1 epoch, 32 examples, lr 1e-3, wd 0, CPU) and one LM trial of a tiny grid (gla, cpu-tiny, 3 steps, CPU).
After the migration, today's planner finds every one of them done: same keys, nothing runs again."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grid.results.cli import main as results_main
from grid.results.store import ResultsStore

OLD = Path(__file__).parent / "data" / "store-72aa131"
OLD_KEYS = {"lm": {"a9dc37542c66f5e8"}, "mad": {"238de5e5717d2647", "368075353d5cdf1a"}}


@pytest.fixture()
def store(tmp_path):
    root = tmp_path / "store"
    shutil.copytree(OLD, root)
    return root


def _planned_mad_keys(protocols=("cosine", "madlab")) -> set[str]:
    from evals.mad.run import build_parser, make_trials
    from evals.mad.settings import all_settings

    keys = set()
    for protocol in protocols:
        args = build_parser("gla").parse_args(["--tasks", "M", "--settings", "baseline", "--epochs", "1",
                                               "--max-train-examples", "32", "--lrs", "1e-3", "--wds", "0",
                                               "--protocol", protocol, "--data-path", "/elsewhere"])
        args.model_id, args.gpus_found = "gla", 0
        keys |= {t.trial_key for t in make_trials(args, all_settings(["M"], which="baseline"))}
    return keys


def _planned_lm_key(tmp_path, data_hash: str) -> str:
    from grid.lm.gridspec import expand, load_grid

    (tmp_path / "data.yaml").write_text("name: tiny-bytes\nsources: [{name: stdlib, kind: stdlib}]\n"
                                        "tokenizer: {kind: bytes}\nseq_len: 128\nmax_tokens: 150000\n")
    grid = tmp_path / "tiny.yaml"
    grid.write_text("name: tiny\ndata: data.yaml\narchitectures:\n  - {name: gla, mixer: gla}\nscales: [cpu-tiny]\n"
                    "recipe: {tokens: 6144, eval_every: 3, ckpt_every: 3, eval_batches: 1}\n")
    return expand(load_grid(grid), 257, data_hash, count=False, device="cpu")[0].trial_key


def test_rekey_moves_a_main_store_onto_todays_keys(store, tmp_path, capsys):
    rs = ResultsStore(store)
    assert {s: set(rs.trial_keys(suite=s)) for s in ("lm", "mad")} == OLD_KEYS
    planned_mad = _planned_mad_keys()
    assert not planned_mad & OLD_KEYS["mad"]  # today's rule gives other keys: without rekey all would run again

    assert results_main(["rekey", "--store", str(store), "--dry-run"]) == 0
    assert "would re-key 3 row(s)" in capsys.readouterr().out
    assert {s: set(rs.trial_keys(suite=s)) for s in ("lm", "mad")} == OLD_KEYS  # a dry run writes nothing

    assert results_main(["rekey", "--store", str(store)]) == 0
    assert "re-keyed 3 row(s)" in capsys.readouterr().out
    rs = ResultsStore(store)
    assert set(rs.trial_keys(suite="mad", status="ok")) == planned_mad
    lm = rs.df(suite="lm")
    config = json.loads(lm["config_json"].iloc[0])
    assert config["device"] == "cpu" and lm["rekeyed_from"].iloc[0] == "a9dc37542c66f5e8"
    assert set(lm["trial_key"]) == {_planned_lm_key(tmp_path, config["data_hash"])}
    # the curve moved with its row; the old files are in history/, not in the live views
    curves = rs.query("SELECT DISTINCT trial_key FROM curves")
    assert set(curves["trial_key"]) == set(lm["trial_key"])
    assert len(rs.query("SELECT * FROM history")) == 3
    assert results_main(["rekey", "--store", str(store)]) == 0  # once is enough: a second run changes nothing
    assert "re-keyed 0 row(s), updated the config of 0, 3 already current" in capsys.readouterr().out


def test_a_row_made_under_another_architecture_entry_keeps_its_key(store, monkeypatch, tmp_path, capsys):
    """The MAD row's parameter count says which architectures.yaml entry built it: one that no longer matches
    is left alone (no new trial counts it as done)."""
    import yaml

    from evals.mad import arch as arch_mod

    doc = yaml.safe_load(arch_mod.ARCH_CONFIG.read_text())
    doc["architectures"]["gla"]["mixer_kwargs"]["num_heads"] = 2
    doc["architectures"]["gla"]["mixer_kwargs"]["expand_k"] = 1.0
    edited = tmp_path / "architectures.yaml"
    edited.write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(arch_mod, "ARCH_CONFIG", edited)
    assert results_main(["rekey", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "re-keyed 1 row(s)" in out and out.count("left mad/") == 2 and "earlier entry" in out
    assert set(ResultsStore(store).trial_keys(suite="mad")) == OLD_KEYS["mad"]


def test_an_lm_eval_row_follows_its_lm_trial_to_the_new_key(store, capsys):
    """grid/harness/suite.py: the evaluation row's source_trial_key (column and config) names the LM trial's new key."""
    from grid.keys import canonical_json, trial_key
    from grid.results.schema import LM_EVAL_SUITE, SOURCE_TRIAL_KEY

    config = {"suite": LM_EVAL_SUITE, SOURCE_TRIAL_KEY: "a9dc37542c66f5e8", "task": "lambada", "seed": 0}
    ResultsStore(store).write_row({"trial_key": trial_key(LM_EVAL_SUITE, config), "status": "ok", "task": "lambada",
                                   "config_json": canonical_json(config), SOURCE_TRIAL_KEY: "a9dc37542c66f5e8"},
                                  suite=LM_EVAL_SUITE, grid="tiny")
    assert results_main(["rekey", "--store", str(store)]) == 0
    assert "re-keyed 4 row(s)" in capsys.readouterr().out
    rs = ResultsStore(store)
    (lm_key,) = rs.trial_keys(suite="lm")
    ev = rs.df(suite=LM_EVAL_SUITE)
    assert ev[SOURCE_TRIAL_KEY].tolist() == [lm_key] and json.loads(ev["config_json"][0])[SOURCE_TRIAL_KEY] == lm_key
    assert ev["trial_key"].tolist() == [trial_key(LM_EVAL_SUITE, {**config, SOURCE_TRIAL_KEY: lm_key})]
