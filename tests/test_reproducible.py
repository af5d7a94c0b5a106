"""maskedkd/reproducible.py: the kernel-branch pin of the reproduce scripts, and the committed fingerprint of a short
embedded run (reproduce/reference/fingerprint.json) on CPUs of the reference machine's kind."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from maskedkd import reproducible
from reproduce.lib.runner import run_all

ROOT = Path(__file__).resolve().parents[1]


def test_branch_is_the_widest_the_flags_allow(monkeypatch):
    monkeypatch.setattr(reproducible.platform, "machine", lambda: "x86_64")
    assert reproducible.branch({"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}) == "avx512"
    assert reproducible.branch({"avx2", "fma", "avx512f"}) == "avx2"  # torch's AVX512 needs BW, VL and DQ too
    assert reproducible.branch({"sse4_2"}) is None
    monkeypatch.setattr(reproducible.platform, "machine", lambda: "aarch64")
    assert reproducible.branch({"avx2", "fma"}) is None


def test_pinned_env_keeps_the_users_values_and_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(reproducible, "branch", lambda flags=None: "avx2")
    assert reproducible.pinned_env({"X": "1"}) == {"X": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    assert reproducible.pinned_env({"MKL_CBWR": "COMPATIBLE"})["MKL_CBWR"] == "COMPATIBLE"
    assert reproducible.pinned_env({"MASKEDKD_KERNELS": "native"}) == {"MASKEDKD_KERNELS": "native"}
    monkeypatch.setattr(reproducible, "branch", lambda flags=None: None)
    assert reproducible.pinned_env({"X": "1"}) == {"X": "1"}


def test_the_scripts_and_their_runs_compute_with_the_pinned_kernels(tmp_path, monkeypatch):
    """run_py.sh exports the pin for the scripts' own process; run_all's subprocesses get it too, and every run
    records what it computed with."""
    b = reproducible.branch()
    if b is None:
        pytest.skip("this CPU has no kernel branch to pin (not x86 with AVX2)")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("MKL_CBWR", raising=False)
    sh = subprocess.run(["bash", "-c", f'cd {ROOT} && eval "$({sys.executable} -I maskedkd/reproducible.py)" && '
                        'echo "$ATEN_CPU_CAPABILITY $MKL_CBWR"'], capture_output=True, text=True, check=True)
    assert sh.stdout.split() == [b, b.upper()]
    from reproduce import fingerprint
    cfg = fingerprint.config().replace(epochs=1, clean_epochs=0, train_size=64, test_size=64, eval_every=1)
    (s,) = run_all([cfg], root=tmp_path, jobs=1)
    assert s["kernels"] == f"aten {b.upper()}, MKL_CBWR {b.upper()}"


def test_short_run_equals_the_committed_fingerprint(tmp_path):
    """The same bits as the reference machine: checked where the CPU is of its kind (vendor, family, model,
    branch); elsewhere skipped with the difference named (`reproduce/fingerprint.py` reports MATCH or DIFFER
    on any machine). A change to the training program that moves any bit of the embedded runs fails here, and
    with it every committed reference number would be stale."""
    from reproduce import fingerprint
    ref = json.loads(fingerprint.REFERENCE.read_text())
    info = reproducible.cpu_info()
    here = {"vendor": info["vendor"], "family": info["family"], "model": info["model"],
            "branch": reproducible.branch()}
    if here != ref["cpu"]:
        pytest.skip(f"CPU {here} is not of the reference machine's kind {ref['cpu']}: bit-identity is not expected")
    fp = fingerprint.fingerprint(tmp_path)
    assert fp["kernels"] == ref["kernels"]
    assert fp["losses"] == ref["losses"]
    assert fp["params_sha256"] == ref["params_sha256"] and fp["final_acc"] == ref["final_acc"]
