"""The committed embedded teachers are what their metadata says: made by `python -m maskedkd.train NAME` (config
hash; a teacher trained under another name records it in `trained_as`), with the recorded test accuracy
(recomputed here on the fixed test set of its regime: the digit scene or the sound set)."""
import json

import pytest
import torch
from safetensors import safe_open

import maskedkd as mkd
from maskedkd.data.loaders import fixed_test_set
from maskedkd.experiments import MODELS, config_hash, get_config
from maskedkd.teachers import ASSETS, cached_teacher


@pytest.mark.parametrize("name", ["digits_teacher", "cluttered_teacher", "fixed_places_teacher", "sounds_teacher"])
def test_shipped_teacher_matches_its_config_and_recorded_accuracy(name):
    shipped = ASSETS / f"{name}.safetensors"
    assert shipped.is_file(), f"the embedded teacher artefact {shipped} is missing"
    assert shipped.stat().st_size < 5 * 2**20
    with safe_open(str(shipped), "pt") as f:
        meta = f.metadata()
    cfg = get_config(name)
    assert meta["config_hash"] == config_hash(cfg)
    assert cached_teacher(cfg) == shipped  # used as is, never retrained
    record = json.loads((ASSETS / f"{name}.json").read_text())
    assert record["command"] == f"python -m maskedkd.train {name}" and record["config_hash"] == config_hash(cfg)
    if "trained_as" in record:  # trained under another name: the same recipe but for the name
        old_name, old_hash = record["trained_as_config"]
        assert config_hash(cfg.replace(name=old_name)) == old_hash
    params = mkd.load_checkpoint(shipped, MODELS[cfg.model])
    x, y = fixed_test_set(cfg)
    with torch.no_grad():
        acc = (mkd.forward(params, x, MODELS[cfg.model]).argmax(-1) == y).float().mean().item()
    assert acc == pytest.approx(float(meta["final_acc"]), abs=2e-3)
    assert acc == pytest.approx(record["test_acc"], abs=2e-3)
