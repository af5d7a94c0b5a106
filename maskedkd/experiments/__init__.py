"""The experiment registry (training recipes by name): `python -m maskedkd.train NAME [key=value ...]` with NAME from
CONFIGS, a JSON config file (write_config), or a .py file that defines `CONFIG = TrainConfig(...)`. Each registered
config's doc names its command, its expected result and the paper table it reproduces (digits.py, imagenet.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..checks import InputError
from .core import (CONFIGS, DOCS, MODELS, NOT_HASHED, TrainConfig, apply_overrides, check_field, check_runnable,
                   config_diff,
                   config_from_json, config_hash, field_table, model_config, register, write_config)

__all__ = ["CONFIGS", "DOCS", "MODELS", "NOT_HASHED", "InputError", "TrainConfig", "apply_overrides", "check_field", "check_runnable",
           "config_diff", "config_from_json", "config_hash", "field_table", "get_config", "model_config", "register",
           "write_config"]


def get_config(name_or_path: str) -> TrainConfig:
    """A registered config by name, a config file written as JSON (write_config), or CONFIG from a Python file."""
    from . import digits, imagenet  # noqa: F401  (registers CONFIGS)
    path = Path(name_or_path)
    if path.suffix == ".json":
        return config_from_json(path)
    if path.suffix == ".py" or path.is_file():
        if path.suffix != ".py":
            raise InputError(f"config file {path}: expected a .json file (write_config) or a .py file that defines "
                             f"CONFIG = TrainConfig(...), not a {path.suffix or 'suffix-less'} file")
        if not path.is_file():
            raise InputError(f"config file {path} not found")
        spec = importlib.util.spec_from_file_location("mkd_user_config", path)
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except InputError as e:
            raise InputError(f"config file {path}: {e}") from None
        except Exception as e:  # the file's own code failed: name the file, keep the traceback
            raise InputError(f"config file {path} raised {type(e).__name__}: {e}") from e
        if not isinstance(getattr(mod, "CONFIG", None), TrainConfig):
            raise InputError(f"config file {path} defines no CONFIG = TrainConfig(...)")
        return mod.CONFIG
    if name_or_path not in CONFIGS:
        raise InputError(f"unknown config {name_or_path!r}; known configs: {sorted(CONFIGS)} (or a .json / .py file)")
    return CONFIGS[name_or_path]
