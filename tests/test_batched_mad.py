"""Batched MAD runs (evals/mad/batched.py): each member of a stacked model trains, stops and reports
exactly as its solo run (evals/mad/protocol.py: run_mad) on CPU with the reference backend, and the
suite driver and the runner route setting groups to it."""
from __future__ import annotations

import math

import pytest

import evals.mad.batched as batched
import evals.mad.protocol as protocol
from evals.mad.batched import batchable, group_key, run_mad_group
from evals.mad.protocol import MADRunConfig, run_mad

# width 32, one tiny model per batched mixer (the architectures' own settings need width 128)
MIXERS = {
    "attention": {"num_heads": 2, "window_size": 6},
    "gla": {"num_heads": 1, "expand_k": 0.5, "expand_v": 1},
    "deltanet": {"num_heads": 1},
    "gated_deltanet": {"num_heads": 1, "head_dim": 32},
    "retnet": {"num_heads": 1},
    "hgrn": {},
    "hgrn2": {"expand_ratio": 16},
}
RUNS = [(1e-3, 0.0), (5e-3, 0.1), (2e-2, 0.1)]  # (lr, weight decay) of the members
TIMING = {"run_wall_s", "train_wall_s"}
REL = 1e-5  # what "the same run" allows (measured: 0 on this CPU; two solo runs differ by 0 to 1e-7)


def model(mixer: str) -> dict:
    return dict(d_model=32, n_layers=2, mixer=mixer, mixer_kwargs=MIXERS[mixer],
                ffn={"kind": "swiglu", "hidden_ratio": 4, "multiple_of": 16}, head_bias=True, backend="reference")


def configs(tmp_path, mixer="gla", task="CR", runs=RUNS, **kw) -> list[dict]:
    setting = dict(task=task, vocab_size=16, seq_len=16, num_train_examples=64, num_test_examples=32)
    base = dict(setting=setting, model=model(mixer), epochs=6, batch_size=16, data_root=str(tmp_path / "data"),
                precision="fp32", device="cpu", **kw)  # 4 steps per epoch: 24 steps
    return [dict(base, lr=lr, weight_decay=wd) for lr, wd in runs]


class Ctx:
    def __init__(self):
        self.reports = []

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append(dict(metrics))


def close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= REL * max(abs(a), abs(b), 1e-12)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    return a == b


def assert_same_as_solo(cfgs):
    """The group's rows and epoch reports equal the solo runs' (same columns, same meaning)."""
    ctxs, done = [Ctx() for _ in cfgs], []
    rows = run_mad_group(cfgs, ctxs, on_done=lambda i, row: done.append(i))
    assert sorted(done) == list(range(len(cfgs)))
    for cfg, row, ctx in zip(cfgs, rows, ctxs):
        solo_ctx = Ctx()
        solo = run_mad(cfg, solo_ctx)
        assert set(row) == set(solo), set(row) ^ set(solo)
        diff = {k: (row[k], solo[k]) for k in solo if k not in TIMING and not close(row[k], solo[k])}
        assert not diff, f"lr={cfg['lr']}: {diff}"
        assert close(ctx.reports, solo_ctx.reports), f"lr={cfg['lr']}: the epoch curves differ"
    return rows, done


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_members_train_exactly_as_their_solo_runs(tmp_path, mixer):
    rows, _ = assert_same_as_solo(configs(tmp_path, mixer))
    assert all(r["status"] == "ok" and r["epochs_run"] == 6 for r in rows)
    assert len({r["loss"] for r in rows}) == len(rows)  # the members really differ


def test_autoencoder_members_train_exactly_as_their_solo_runs(tmp_path):
    assert_same_as_solo(configs(tmp_path, "gla", task="C"))


def test_cosine_protocol_members_follow_their_own_schedules(tmp_path):
    assert_same_as_solo(configs(tmp_path, "attention", protocol="cosine"))


def test_a_member_that_stops_leaves_the_stack_and_the_others_are_unchanged(tmp_path, monkeypatch):
    # the member with lr 5e-3 passes the stop rule after epoch 1, the others never (as if they had a
    # stop_acc they never reach): solo and batched apply the same patched rule
    real = protocol.stops

    def stops(cfg, rec):
        return (cfg.lr == 5e-3 and rec["epoch"] >= 1) or real(cfg, rec)

    monkeypatch.setattr(protocol, "stops", stops)
    monkeypatch.setattr(batched, "stops", stops)
    kept = []
    import grid.models.stacked as stacked

    real_keep = stacked.StackedModel.keep
    monkeypatch.setattr(stacked.StackedModel, "keep", lambda self, idx: (kept.append(list(idx)), real_keep(self, idx)))
    rows, done = assert_same_as_solo(configs(tmp_path, "deltanet"))
    assert kept == [[0, 2]]  # the finished member's slices went at once
    assert done[0] == 1  # and its row before the others'
    assert rows[1]["stopped_early"] and rows[1]["epochs_run"] == 2 and rows[1]["steps"] == 8
    assert not rows[0]["stopped_early"] and rows[0]["steps"] == 24


@pytest.mark.parametrize("proto", ["madlab", "cosine"])
def test_a_diverging_member_is_flagged_while_the_others_finish(tmp_path, proto):
    runs = [(1e-3, 0.0), (1e30, 0.0), (5e-3, 0.1)]  # an absurd lr: non-finite within the first epoch
    rows, _ = assert_same_as_solo(configs(tmp_path, "gla", runs=runs, protocol=proto))
    assert rows[1]["nan"] is True and rows[1]["diverged_step"] is not None
    assert rows[1]["error"].startswith("non-finite loss")
    assert [r["nan"] for r in (rows[0], rows[2])] == [False, False]
    assert rows[0]["status"] == rows[2]["status"] == "ok" and rows[0]["epochs_run"] == 6


def test_a_group_must_share_everything_but_lr_and_weight_decay(tmp_path):
    cfgs = configs(tmp_path)
    assert group_key(MADRunConfig(**cfgs[0])) == group_key(MADRunConfig(**cfgs[1]))
    with pytest.raises(ValueError, match="differ only in"):
        run_mad_group([cfgs[0], dict(cfgs[1], epochs=3)])


def test_batchable_says_which_runs_can_be_stacked(tmp_path):
    cfg = MADRunConfig(**configs(tmp_path)[0])
    assert batchable(cfg, gpus=0) == (True, "")
    assert batchable(MADRunConfig(**{**configs(tmp_path)[0], "eval_train": True}), gpus=0)[0] is False
    lstm = MADRunConfig(**{**configs(tmp_path)[0], "model": {**model("gla"), "mixer": "lstm", "mixer_kwargs": {}}})
    ok, why = batchable(lstm, gpus=0)
    assert not ok and "lstm" in why
    arch = MADRunConfig(setting=configs(tmp_path)[0]["setting"], arch="retnet")
    assert batchable(arch, gpus=0)[0] and not batchable(arch, gpus=1)[0]  # fused retnet is fla's own layer


# ------------------------------------------------------------------------------ suite driver, runner

def _args(argv, arch="gla", gpus=0):
    from evals.mad.run import build_parser

    args = build_parser(arch).parse_args(argv)
    args.model_id = args.model_id or arch
    args.gpus_found = gpus
    return args


def test_driver_batches_each_setting_where_the_mixer_can_be_stacked():
    from evals.mad.run import GROUP_FN, batch_or_pack, make_trials
    from evals.mad.settings import all_settings

    settings = all_settings(["M", "C"], which="baseline")
    trials = make_trials(_args([]), settings)
    assert batch_or_pack(trials, _args([]), None) == trials  # the default is off until a GPU has checked it
    out = batch_or_pack(trials, _args(["--batch", "on"]), None)
    assert len(out) == 2 and all(t.config["group"] == GROUP_FN and len(t.members) == 6 for t in out)
    assert [m.trial_key for t in out for m in t.members] == [t.trial_key for t in trials]  # keys as today
    capped = batch_or_pack(trials, _args(["--batch", "on", "--pack", "4"]), None)
    assert [len(t.members) for t in capped] == [4, 2, 4, 2]
    assert batch_or_pack(trials, _args(["--batch", "off"]), None) == trials  # CPU, --pack auto: one run each
    lstm = make_trials(_args([], arch="lstm"), settings)
    assert batch_or_pack(lstm, _args(["--batch", "on"], arch="lstm"), None) == lstm  # not stackable: as --pack says
    packed = batch_or_pack(lstm, _args(["--pack", "6"], arch="lstm"), None)
    assert all(t.members and "group" not in t.config for t in packed)


def _pack(tmp_path, group):
    from grid.run.pack import make_pack
    from grid.run.spec import make_trial

    members = [make_trial({"x": i}, suite="s", grid="g", trainable="tests.stub_trials:ok_trial") for i in range(3)]
    return make_pack(members, group=group)


def test_a_group_pack_gives_each_member_its_row_as_it_finishes(tmp_path):
    from grid.run.pack import run_members

    handed = []
    rows = run_members(_pack(tmp_path, "tests.stub_trials:group_trial"), {"gpu_index": None},
                       on_finished=lambda r: handed.append(r["trial_key"]))
    assert [r["metrics"]["score"] for r in rows] == [0.0, 3.0, 6.0]
    assert all(r["exec_path"] == "batched" and r["exec_members"] == 3 and r["status"] == "ok" for r in rows)
    assert handed == [r["trial_key"] for r in rows] and rows[0]["metrics"]["loss"] == 0.5


def test_a_failing_group_leaves_its_unfinished_members_to_threads(tmp_path):
    from grid.run.pack import run_members

    rows = run_members(_pack(tmp_path, "tests.stub_trials:group_fails_after_first"), {"gpu_index": None})
    assert rows[0]["exec_path"] == "batched" and rows[0]["metrics"]["score"] == -1.0
    assert [r["exec_path"] for r in rows[1:]] == ["pack", "pack"]
    assert all("cannot batch these" in r["metrics"]["exec_fallback"] for r in rows[1:])
    assert [r["metrics"]["score"] for r in rows[1:]] == [2.0, 4.0]  # ok_trial's own results


def test_exec_path_is_a_checked_store_column():
    from grid.results.schema import FIXED_COLUMNS, SchemaError, row_table

    assert "exec_path" in FIXED_COLUMNS and "exec_members" in FIXED_COLUMNS
    assert row_table({"trial_key": "k", "exec_path": "batched", "exec_members": 6}).num_rows == 1
    with pytest.raises(SchemaError, match="exec_path"):
        row_table({"trial_key": "k", "exec_path": "vmapped"})
