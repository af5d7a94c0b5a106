"""The experiment registry (training recipes by name): `python -m maskedkd.train NAME [key=value ...]` with NAME from
CONFIGS, a JSON config file (write_config), or a .py file that defines `CONFIG = TrainConfig(...)`. Each registered
config's doc names its command, its expected result and the paper table it reproduces (digits.py, imagenet.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .core import (CONFIGS, DOCS, MODELS, NOT_HASHED, RATIOS, TrainConfig, apply_overrides, config_diff,
                   config_from_json, config_hash, model_config, register, write_config)

__all__ = ["CONFIGS", "DOCS", "MODELS", "NOT_HASHED", "RATIOS", "TrainConfig", "apply_overrides", "config_diff",
           "config_from_json", "config_hash", "get_config", "model_config", "register", "write_config"]


def get_config(name_or_path: str) -> TrainConfig:
    """A registered config by name, a config file written as JSON (write_config), or CONFIG from a Python file."""
    from . import digits, imagenet  # noqa: F401  (registers CONFIGS)
    if name_or_path.endswith(".json"):
        return config_from_json(name_or_path)
    if name_or_path.endswith(".py") or Path(name_or_path).is_file():
        spec = importlib.util.spec_from_file_location("mkd_user_config", name_or_path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        if not isinstance(getattr(mod, "CONFIG", None), TrainConfig):
            raise ValueError(f"{name_or_path} defines no CONFIG = TrainConfig(...)")
        return mod.CONFIG
    if name_or_path not in CONFIGS:
        raise ValueError(f"unknown config {name_or_path!r}; known configs: {sorted(CONFIGS)}")
    return CONFIGS[name_or_path]
