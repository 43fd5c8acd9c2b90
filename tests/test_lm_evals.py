"""Recall evaluations (grid/lm/evals): the `evals` block, the sequences' layouts and determinism, the scores
of models whose answers are known (an oracle that looks things up in its context, a model that knows
nothing), and the block's place in trial keys and in a trial's row (in-process, no Ray)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from grid.lm.evals import EvalsSpec
from grid.lm.evals.run import build_sets, run_evals, summarise
from grid.lm.evals.tasks import IGNORE, copy_sets, mqar_sets, needle_sets, usable_ids
from grid.lm.gridspec import GridError, GridSpec, expand, load_grid
from grid.results.schema import COPY_ACC, COPY_ACC_BEYOND, MQAR_ACC, NEEDLE_LOSS, RECALL_COLUMNS
from tests.helpers import write_tiny_bytes_spec

TINY = {"batch_size": 4,
        "in_context_copy": {"settings": [[6, 20], [6, 150]], "samples": 6},
        "associative_recall": {"pairs": [2, 5], "seq_len": 40, "samples": 6},
        "needle": {"depths": [0.0, 0.5, 1.0], "context": 90, "samples": 6}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from grid.data import prepare

    return prepare(write_tiny_bytes_spec(tmp_path_factory.mktemp("evaldata")), verbose=False)


def _heldout(seed=0):
    text = np.random.default_rng(seed).integers(0, 256, 5000)
    return lambda rng, n: text[(s := int(rng.integers(0, len(text) - n + 1))):s + n]


# ------------------------------------------------------------------------------------------ the block

def _grid(tmp_path: Path, evals: str) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text("name: g\ndata: d.yaml\nscales: [cpu-tiny]\narchitectures: [{name: gla, mixer: gla}]\n" + evals)
    return p


@pytest.mark.parametrize("body, needles", [
    ("evals: {needle: {depths: [1.5]}}", ["evals.needle.depths", "outside [0, 1]"]),
    ("evals: {associative_recall: {pairs: [64], seq_len: 128}}", ["4 * pairs <= seq_len"]),
    ("evals: {in_context_copy: {settings: [[1, 4]]}}", ["span >= 2"]),
    ("evals: {needle: {depths: [0.5, 0.501]}}", ["differ by at least 0.01"]),
    ("evals: {batch: 3}", ["evals.batch", "unknown field"]),
    ("evals: {in_context_copy: null, associative_recall: null, needle: null}", ["every task is null"]),
])
def test_bad_evals_blocks_name_the_field(tmp_path, body, needles):
    with pytest.raises(GridError) as exc:
        load_grid(_grid(tmp_path, body))
    for n in needles:
        assert n in str(exc.value)


def test_the_block_enters_trial_keys_only_when_present():
    base = {"name": "g", "data": "d.yaml", "scales": ["cpu-tiny"], "architectures": [{"name": "gla", "mixer": "gla"}]}
    (plain,) = expand(GridSpec.model_validate(base), 257, "h", count=False)
    (with_evals,) = expand(GridSpec.model_validate({**base, "evals": TINY}), 257, "h", count=False)
    (other,) = expand(GridSpec.model_validate({**base, "evals": {**TINY, "seed": 1}}), 257, "h", count=False)
    assert "evals" not in plain.config  # grids without evals keep their keys
    assert with_evals.config["evals"]["seed"] == 0
    assert len({plain.trial_key, with_evals.trial_key, other.trial_key}) == 3


def test_vocabulary_too_small_for_the_pairs_is_a_grid_error():
    spec = GridSpec.model_validate({"name": "g", "data": "d.yaml", "scales": ["cpu-tiny"],
                                    "architectures": [{"name": "gla", "mixer": "gla"}],
                                    "evals": {"associative_recall": {"pairs": [200], "seq_len": 1024}}})
    with pytest.raises(GridError, match=r"pairs=200.*allowed: pairs <= 128"):
        expand(spec, 257, "h", count=False)


# ---------------------------------------------------------------------------------------- sequences

def test_copy_layout_repeats_the_span_after_held_out_text():
    spec = EvalsSpec.model_validate(TINY).in_context_copy
    ids = usable_ids(257, 256)
    (short, long_) = copy_sets(spec, 0, ids, _heldout(), trained_len=128)
    assert short.column == "copy_acc_k6_g20" and not short.beyond_context and long_.beyond_context
    x, y = short.inputs, short.labels
    assert x.shape == (6, 2 * 6 + 20)
    assert (x[:, :6] == x[:, 26:]).all() and (x != 256).all()
    scored = y != IGNORE
    assert scored.sum(1).tolist() == [5] * 6  # repeat tokens 1..5, predicted from the position before
    assert (y[:, 26:31] == x[:, 27:32]).all() and not scored[:, :26].any()


def test_mqar_layout_follows_zoology():
    spec = EvalsSpec.model_validate(TINY).associative_recall
    ids = usable_ids(257, 256)
    for s, n in zip(mqar_sets(spec, 0, ids), spec.pairs):
        for x, y in zip(s.inputs, s.labels):
            keys, values = x[0:2 * n:2], x[1:2 * n:2]
            assert len(set(keys)) == n and len(set(values)) == n
            assert keys.max() < 128 <= values.min()  # keys from one half of the usable ids, values the other
            region = x[2 * n:]
            assert sorted(region[np.isin(region, keys)].tolist()) == sorted(keys.tolist())  # each key once
            pos = np.flatnonzero(y != IGNORE)
            assert ((pos - 2 * n) % 2 == 0).all()  # even offsets in the query region
            lookup = dict(zip(keys.tolist(), values.tolist()))
            assert [lookup[k] for k in x[pos]] == y[pos].tolist()


def test_needle_layout_puts_the_fact_at_each_depth_and_asks_at_the_end():
    spec = EvalsSpec.model_validate(TINY).needle
    ids = usable_ids(257, 256)
    enc = lambda s: list(s.encode())  # noqa: E731
    sets = needle_sets(spec, 0, ids, _heldout(), enc)
    prefix = np.array(enc(spec.prefix))
    starts = []
    for s in sets:
        x, y = s.inputs[0], s.labels[0]
        ans = y[y != IGNORE]
        assert len(ans) == spec.value_tokens and (x[-spec.value_tokens:] == ans).all()
        hits = [i for i in range(len(x) - len(prefix)) if (x[i:i + len(prefix)] == prefix).all()]
        starts.append(hits[0])
        assert hits[-1] == len(x) - spec.value_tokens - spec.key_tokens - len(enc(spec.middle)) - len(prefix)
    assert starts[0] == 0 and starts[0] < starts[1] < starts[2]  # depth 0, 0.5, 1


def test_sequences_are_a_pure_function_of_the_block_and_the_data(data):
    a = build_sets(EvalsSpec.model_validate(TINY), data["dir"], 128)
    b = build_sets(EvalsSpec.model_validate(TINY), data["dir"], 128)
    c = build_sets(EvalsSpec.model_validate({**TINY, "seed": 1}), data["dir"], 128)
    more = {**TINY, "associative_recall": {**TINY["associative_recall"], "pairs": [2, 3, 5]}}
    d = {s.column: s for s in build_sets(EvalsSpec.model_validate(more), data["dir"], 128)}
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x.inputs, y.inputs) and np.array_equal(x.labels, y.labels)
        assert not np.array_equal(x.inputs, z.inputs)
        assert np.array_equal(x.inputs, d[x.column].inputs)  # adding a setting leaves the others alone


# -------------------------------------------------------------------------------------------- scores

class LookBack(torch.nn.Module):
    """Predicts the token that followed the longest earlier match of the context's suffix (an ideal
    induction/recall mechanism), with a large logit: it should copy, recall and retrieve perfectly."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*x.shape, self.vocab)
        for b, row in enumerate(x.tolist()):
            for t in range(len(row)):
                best, pick = 0, None
                for s in range(t):
                    n = 0
                    while n <= s and row[s - n] == row[t - n]:
                        n += 1
                    if n > best:
                        best, pick = n, row[s + 1]
                if pick is not None:
                    out[b, t, pick] = 30.0
        return out + self.dummy


class Uniform(torch.nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.head = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, x):
        return self.head.expand(*x.shape, -1)


def test_an_ideal_recall_model_scores_perfectly_and_a_blank_one_at_chance(data):
    spec = {**TINY, "in_context_copy": {"settings": [[6, 20]], "samples": 4},
            "associative_recall": {"pairs": [2, 5], "seq_len": 40, "samples": 4},
            "needle": {"depths": [0.5], "context": 90, "samples": 4}}
    ideal = run_evals(LookBack(257), spec, data["dir"], trained_len=128)
    assert ideal["copy_acc_k6_g20"] == 1.0 and ideal[MQAR_ACC] == 1.0 and ideal[NEEDLE_LOSS] < 1e-6
    blank = run_evals(Uniform(257), spec, data["dir"], trained_len=128)
    assert blank[NEEDLE_LOSS] == pytest.approx(math.log(257), rel=1e-6)
    assert blank[MQAR_ACC] == 0.0  # argmax of equal logits is id 0, never a value (values are the upper half)
    assert blank["evals_s"] > 0


def test_summaries_split_copy_settings_at_the_trained_context(data):
    sets = build_sets(EvalsSpec.model_validate(TINY), data["dir"], trained_len=128)
    scores = {s.column: float(i) for i, s in enumerate(sets)}
    summary = summarise(sets, scores)
    assert set(summary) == set(RECALL_COLUMNS)
    assert summary[COPY_ACC] == scores["copy_acc_k6_g20"] and summary[COPY_ACC_BEYOND] == scores["copy_acc_k6_g150"]
    assert summary[MQAR_ACC] == (scores["mqar_acc_n2"] + scores["mqar_acc_n5"]) / 2


# ------------------------------------------------------------------------------------ in the trial

def test_a_trial_with_evals_has_every_score_in_its_row(data):
    from grid.lm.trial import run_lm

    torch.set_num_threads(1)
    spec = GridSpec.model_validate({"name": "t", "data": "x.yaml", "scales": ["cpu-tiny"], "evals": TINY,
                                    "recipe": {"tokens": 2048 * 2, "eval_every": 2, "ckpt_every": 2,
                                               "eval_batches": 1},
                                    "architectures": [{"name": "deltanet", "mixer": "deltanet"}]})
    (t,) = expand(spec, 257, data["content_hash"])
    out = run_lm({**t.config, "data_dir": data["dir"]})
    assert out["status"] == "ok"
    for col in EvalsSpec.model_validate(TINY).columns() + list(RECALL_COLUMNS):
        assert math.isfinite(out[col]), col
    assert 0 <= out[MQAR_ACC] <= 1 and out[NEEDLE_LOSS] > 0
