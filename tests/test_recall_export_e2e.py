"""A grid with an `evals` block through the real embedded Ray, then its trained model out of the project:
recall columns in the rows, the leaderboard and `analyze recall`; `grid export` to a transformers folder
whose logits equal our model's (lingrid format: our modeling file, reference mixers on CPU); and
`grid eval lm-eval` on it with the tiny offline tasks of tests/data/lm_eval, stored as lm-eval rows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # one grid on an embedded Ray (~20 s to start on 2 cores), then lm-eval twice

from grid.results.schema import (  # noqa: E402
    COPY_ACC,
    COPY_ACC_BEYOND,
    LM_EVAL_SUITE,
    MQAR_ACC,
    NEEDLE_LOSS,
    SOURCE_TRIAL_KEY,
)
from grid.results.store import ResultsStore  # noqa: E402
from tests.helpers import ROOT, embedded_ray, write_tiny_bytes_spec  # noqa: E402

GRID = """name: tiny-recall
data: data.yaml
architectures:
  - {name: gla, mixer: gla, mixer_kwargs: {num_heads: 2}}
hybrid: ["3:1"]
scales: [cpu-tiny]
recipe: {tokens: 8192, eval_every: 2, ckpt_every: 2, eval_batches: 1}
evals:
  batch_size: 8
  at_checkpoints: true
  in_context_copy: {settings: [[8, 32], [8, 160]], samples: 8}
  associative_recall: {pairs: [2, 4], seq_len: 32, samples: 8}
  needle: {depths: [0.25, 0.75], context: 96, samples: 8}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished trial (gla 3:1 at cpu-tiny, 4 steps) run by `python -m grid run` on an embedded Ray."""
    from grid.lm.cli import run_main

    root = tmp_path_factory.mktemp("recall")
    write_tiny_bytes_spec(root)
    (root / "grid.yaml").write_text(GRID)
    gen = embedded_ray(num_cpus=2)
    next(gen)
    try:
        code = run_main([str(root / "grid.yaml"), "--results", str(root / "store"), "--ray-tmp-path",
                         str(root / "ray")])
    finally:
        gen.close()
    assert code == 0
    store = ResultsStore(root / "store")
    (row,) = store.df(suite="lm", grid="tiny-recall").to_dict("records")
    return {"root": root, "row": row, "store": store,
            "args": ["--results", str(root / "store"), "--ray-tmp-path", str(root / "ray")]}


def test_every_recall_score_is_a_column_and_a_curve(trained):
    from grid.lm.evals import EvalsSpec

    row = trained["row"]
    config = json.loads(row["config_json"])
    spec = EvalsSpec.model_validate(config["evals"])
    for col in spec.columns() + [COPY_ACC, COPY_ACC_BEYOND, MQAR_ACC, NEEDLE_LOSS]:
        assert col in row and math.isfinite(row[col]), col
    assert row["copy_acc_k8_g32"] == row[COPY_ACC]  # 48 tokens: within the trained 128
    assert row["copy_acc_k8_g160"] == row[COPY_ACC_BEYOND]  # 176 tokens: beyond it
    assert 0 < row[NEEDLE_LOSS] < 20
    curves = trained["store"].query("SELECT step, mqar_acc FROM curves ORDER BY step")
    assert curves["mqar_acc"].iloc[-1] == row[MQAR_ACC]
    # at_checkpoints: the checkpoints at steps 2 and 4 have scores; the last are the row's
    assert curves.set_index("step")["mqar_acc"].notna().to_dict() == {1: False, 2: True, 3: False, 4: True}


def test_leaderboard_and_analyze_recall_show_the_scores(trained, capsys, tmp_path):
    from grid.analysis.cli import main as analyze

    assert analyze(["leaderboard", "--results", str(trained["root"] / "store"), "--markdown"]) == 0
    out = capsys.readouterr().out  # markdown: every column (the terminal table drops what does not fit)
    assert "copy" in out and "MQAR" in out and "needle loss" in out
    assert analyze(["recall", "--results", str(trained["root"] / "store"), "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "attn_frac" in out and "gla" in out and "0.250" in out  # one attention layer in four
    assert {p.name for p in tmp_path.glob("*.png")} >= {"recall_val_loss.png", "recall_mqar_acc.png",
                                                        "recall_copy_acc.png", "recall_needle_loss.png"}


def test_export_loads_in_transformers_with_equal_logits(trained, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grid.export.cli import main as export
    from grid.export.locate import load_trained
    from grid.models import ModelConfig, build_model

    key = trained["row"]["trial_key"]
    out = tmp_path / "model"
    assert export([key, str(out), *trained["args"]]) == 0
    printed = capsys.readouterr().out
    # gla's default norm_eps (1e-6) differs from the stack's (1e-5): no exact fla model, so auto picks lingrid
    assert "lingrid format" in printed and "norm_eps" in printed
    # path: our modeling file, reference mixers
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, lingrid_backend="reference")
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    t = load_trained(key, trained["root"] / "store", trained["root"] / "ray")
    ours = build_model(ModelConfig.model_validate({**t.config["model"], "backend": "reference"}))
    ours.load_state_dict(t.state_dict)
    x = torch.tensor([tok.encode("import os\nprint(os.getcwd())\n")])
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ours(x), rtol=0, atol=1e-5)
        gen = model.generate(x, max_new_tokens=5, do_sample=False)
    assert gen.shape == (1, x.shape[1] + 5) and torch.equal(gen[:, :x.shape[1]], x)
    assert export([key, str(out), *trained["args"]]) == 2  # the folder is not empty now
    assert "not an empty folder" in capsys.readouterr().err


def test_lm_eval_runs_offline_and_stores_rows_linked_to_the_trial(trained, capsys, monkeypatch):
    pytest.importorskip("lm_eval")
    from grid.harness.cli import main as evaluate

    monkeypatch.chdir(ROOT)  # the task YAMLs name their JSON files relative to the repository root
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    key = trained["row"]["trial_key"]
    args = ["lm-eval", key, "--tasks", "lingrid_tiny_choice,lingrid_tiny_ppl", "--include-path",
            str(ROOT / "tests" / "data" / "lm_eval"), "--device", "cpu", "--batch-size", "2", *trained["args"]]
    assert evaluate(args) == 0
    assert "stored 2 row(s)" in capsys.readouterr().out
    df = trained["store"].df(suite=LM_EVAL_SUITE)
    assert set(df["task"]) == {"lingrid_tiny_choice", "lingrid_tiny_ppl"}
    assert set(df[SOURCE_TRIAL_KEY]) == {key} and set(df["grid"]) == {"tiny-recall"}
    assert set(df["model_id"]) == {"gla"} and set(df["hybrid"]) == {"3:1"} and set(df["status"]) == {"ok"}
    choice = df[df["task"] == "lingrid_tiny_choice"].iloc[0]
    assert 0 <= choice["acc"] <= 1 and choice["n_samples"] == 4
    ppl = df[df["task"] == "lingrid_tiny_ppl"].iloc[0]
    assert math.isfinite(ppl["word_perplexity"]) and ppl["bits_per_byte"] > 0
    # the same evaluation again replaces its rows (same trial_key), it does not add rows
    assert evaluate(args) == 0
    assert len(trained["store"].df(suite=LM_EVAL_SUITE)) == 2


def test_bad_arguments_exit_2_before_any_work(trained, capsys, tmp_path):
    from grid.export.cli import main as export
    from grid.harness.cli import main as evaluate

    assert export(["../bad", str(tmp_path / "x")]) == 2
    assert "trial_key" in capsys.readouterr().err
    assert export(["0123456789abcdef", str(tmp_path / "x"), *trained["args"]]) == 2
    assert "no LM trial with trial_key" in capsys.readouterr().err
    assert evaluate(["lm-eval", "0123456789abcdef", "--tasks", "x", "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
    assert evaluate(["lm-eval", "0123456789abcdef", "--tasks", "x", "--include-path", str(tmp_path / "nope")]) == 2
    assert "--include-path" in capsys.readouterr().err
