"""The committed embedded teacher is what its metadata says: made by `python -m maskedkd.train digits_teacher`
(config hash), with the recorded test accuracy (recomputed here on the fixed test set)."""
import json

import pytest
import torch
from safetensors import safe_open

import maskedkd as mkd
from maskedkd.experiments import MODELS, get_config
from maskedkd.data.loaders import DigitsData
from maskedkd.experiments import config_hash
from maskedkd.teachers import ASSETS, cached_teacher

SHIPPED = ASSETS / "digits_teacher.safetensors"


def test_shipped_teacher_matches_its_config_and_recorded_accuracy():
    assert SHIPPED.is_file(), "the embedded teacher artefact is missing"
    assert SHIPPED.stat().st_size < 5 * 2**20
    with safe_open(str(SHIPPED), "pt") as f:
        meta = f.metadata()
    cfg = get_config("digits_teacher")
    assert meta["config_hash"] == config_hash(cfg)
    assert cached_teacher(cfg) == SHIPPED  # used as is, never retrained
    record = json.loads((ASSETS / "digits_teacher.json").read_text())
    assert record["command"] == "python -m maskedkd.train digits_teacher"
    params = mkd.load_checkpoint(SHIPPED, MODELS["digits_teacher"])
    (x, y), = DigitsData(cfg).eval_batches(batch=10**6)
    with torch.no_grad():
        acc = (mkd.forward(params, x, MODELS["digits_teacher"]).argmax(-1) == y).float().mean().item()
    assert acc == pytest.approx(float(meta["final_acc"]), abs=2e-3)
    assert acc == pytest.approx(record["test_acc"], abs=2e-3)
