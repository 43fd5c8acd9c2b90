"""`python -m evals.mad.mad_eval_<arch>` exists exactly for the entries of configs/mad/architectures.yaml,
each the generated three-line shim (evals/mad/shims.py) that runs the one MAD command for its arch."""
from evals.mad import shims


def test_one_shim_per_architecture_entry_and_no_other():
    want = shims.expected()
    assert set(shims.present()) == set(want), "run `python -m evals.mad.shims` after editing architectures.yaml"
    stale = [p.name for p, text in want.items() if p.read_text() != text]
    assert not stale, f"hand-edited shims {stale}: run `python -m evals.mad.shims`"


def test_a_shim_runs_the_mad_command_for_its_arch(monkeypatch):
    import runpy

    from evals.mad import run

    seen = {}
    monkeypatch.setattr(run, "main", lambda argv=None, default_arch=None: seen.setdefault("arch", default_arch) and 0)
    try:
        runpy.run_module("evals.mad.mad_eval_transformer_window_128", run_name="__main__")
    except SystemExit as exc:
        assert exc.code == 0
    assert seen == {"arch": "transformer-window-128"}
