"""The full-scale path rehearsed at real model size on the CPU (reproduce/rehearsal.py): DeiT-Ti <- DeiT-S at
224 px from a timm-written teacher file, ImageFolder JPEGs with DeiT's recipe, torchrun x2 with gloo, bf16 autocast,
evaluation, checkpoints, and a SIGKILL-free interrupt + resume that continues the loss curve bit-exactly."""
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_full_scale_dress_rehearsal(tmp_path):
    out = tmp_path / "rehearsal"
    r = subprocess.run(["bash", str(ROOT / "reproduce/rehearsal.sh"), "--out", str(out)], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["pass"] and all(report["checks"].values()), report["checks"]
    assert "rehearsal: PASS" in r.stdout
