"""External evaluation harnesses on trained LM trials: lm-evaluation-harness (`python -m grid eval lm-eval`)."""
