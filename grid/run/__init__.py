"""Ray Tune runner: trial specs (spec.py), the suite contract (suites.py), resources, the worker-side trainable,
store/progress callbacks, run_trials (runner.py). Import the module that owns a name; `grid.run` itself is empty
so that importing it never imports Ray or torch."""
