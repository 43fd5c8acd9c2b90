"""Model zoo: one LM stack with a pluggable token mixer (see grid/models/registry.py)."""
from grid.models.config import ModelConfig, load_model_config
from grid.models.errors import BackendUnavailable, ConfigError
from grid.models.stack import LM, build_model

__all__ = ["LM", "BackendUnavailable", "ConfigError", "ModelConfig", "build_model", "load_model_config"]
