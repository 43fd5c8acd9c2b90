"""Trained LM trials as transformers model folders (see grid/export/hf.py)."""
