"""The small hybrid-recall study as shipped (docs/hybrid-recall.md): the grid's trials, its claims, its scripts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grid.analysis.recall import attention_fraction
from grid.lm.gridspec import expand, load_grid

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "configs" / "grids" / "hybrid-recall-small.yaml"


def test_grid_has_the_documented_trials_iso_parameter_and_exportable():
    from grid.export.fla_map import fla_config

    trials = expand(load_grid(GRID), vocab_size=4096, data_hash="x")
    assert len(trials) == 9
    fracs = {(t.arch, t.hybrid): attention_fraction(t.mixer, ",".join(map(str, t.counts["attention_layers"])),
                                                    '{"model": {"n_layers": %d}}' % t.model.n_layers)
             for t in trials}
    for arch in ("gla", "deltanet"):
        assert [fracs[(arch, h)] for h in ("pure", "7:1", "3:1", "1:1")] == [0, 1 / 8, 1 / 4, 1 / 2]
    assert fracs[("transformer", "pure")] == 1.0
    params = [t.counts["non_embedding_params"] for t in trials]
    assert max(params) / min(params) < 1.01
    # the same tokens for every model: recipe.tokens / (64 x 512) steps
    steps = load_grid(GRID).recipe.tokens // (64 * 512)
    assert {(t.train["steps"], t.train["batch_size"], t.train["seq_len"]) for t in trials} == {(steps, 64, 512)}
    for t in trials:  # the doc's claim: every trained model exports as fla's own class
        fla_config(t.model)
    copy = load_grid(GRID).evals.in_context_copy
    assert [2 * s + g > 512 for s, g in copy.settings] == [False, False, False, True]


def test_study_script_parses_and_link_corpus_links_packages(tmp_path):
    assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu" / "hybrid_recall.sh")]).returncode == 0
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "link_corpus.py"), str(tmp_path / "c"),
                        "--packages", "yaml", "no_such_package_xyz"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "c" / "yaml").is_symlink() and list((tmp_path / "c" / "yaml").glob("*.py"))
    assert "skip no_such_package_xyz" in p.stderr


@pytest.mark.parametrize("path", ["configs/data/site-packages-bpe.yaml"])
def test_study_data_spec_is_valid(path):
    from grid.data import load_data_spec

    spec = load_data_spec(ROOT / path)
    assert spec.seq_len == 512 and spec.tokenizer.vocab_size == 4096
    assert spec.max_tokens * (1 - spec.val_fraction) >= 305 * 32768  # one epoch holds the planned 10M tokens
