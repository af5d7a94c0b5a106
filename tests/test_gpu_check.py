"""reproduce/gpu_check.sh: MFU arithmetic, the peak table, the no-GPU exit, its whole path on CPU (--cpu-smoke)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import maskedkd as mkd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "reproduce"), str(ROOT / "reproduce" / "lib")]
import gpu_check  # noqa: E402

TI, S = mkd.vit_config("deit_tiny_patch16_224"), mkd.vit_config("deit_small_patch16_224")


def test_step_flops_and_mfu_match_the_digest_gmacs_by_hand():
    """Digest 2.7: DeiT-Ti 1.254 GMAC forward, DeiT-S 4.599 (196 patches) / 2.251 (98) GMAC; 2 FLOPs per MAC,
    student forward + backward = 3x forward (values rounded to 3 decimals: rel 1e-3)."""
    masked, vanilla = gpu_check.step_flops(TI, S, 98, 256), gpu_check.step_flops(TI, S, None, 256)
    assert masked == pytest.approx(2 * (3 * 1.254 + 2.251) * 256 * 1e9, rel=1e-3)  # 3.079 TFLOP
    assert vanilla == pytest.approx(2 * (3 * 1.254 + 4.599) * 256 * 1e9, rel=1e-3)  # 4.281 TFLOP
    # 3.0787 TFLOP in 20 ms on a 989 TFLOP/s GPU: 153.9 TFLOP/s, 15.57% MFU
    assert gpu_check.mfu(3.0787e12, 0.020, 989.0) == pytest.approx(0.15565, rel=1e-4)
    assert gpu_check.mfu(masked, 0.020, None) is None


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA GH200 480GB", 989.0),
    ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200 NVL", 835.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L40S", 362.0),
    ("NVIDIA L40", 181.0), ("NVIDIA A10", 125.0), ("NVIDIA L4", 121.0),
    ("NVIDIA A10G", None), ("Tesla V100-SXM2-16GB", None), ("Tesla T4", None), ("", None)])
def test_peak_table_lookup_never_guesses(name, tflops):
    value, source = gpu_check.peak_tflops(name)
    assert value == tflops
    assert ("--peak-tflops" in source) == (tflops is None)
    assert gpu_check.peak_tflops(name, 500.0) == (500.0, "--peak-tflops")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_the_script_exits_non_zero_saying_so():
    p = subprocess.run(["bash", "reproduce/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.startswith("no CUDA device: ")


@pytest.mark.slow
def test_cpu_smoke_runs_the_whole_script_and_prints_one_row(tmp_path):
    """~20 s with inductor's cache warm from an earlier run, ~2 min cold (CPU inductor builds ~40 kernels per graph)."""
    out = tmp_path / "gpu_check.json"
    p = subprocess.run(["bash", "reproduce/gpu_check.sh", "--cpu-smoke", "--peak-tflops", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    table = [line for line in p.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 3 and set(table[1]) == {"|", "-"}  # header, separator, exactly one row
    header, row = ([c.strip() for c in line.strip("|").split("|")] for line in (table[0], table[2]))
    assert len(header) == len(row) == table[1].count("---") == 12
    assert row[-1].startswith("PASS") and header[-1] == "3-step check"

    r = json.loads(out.read_text())
    assert r["markdown_row"] == table[2] and r["markdown_header"].splitlines() == table[:2]
    positive = ["ms_vanilla", "ms_maskedkd", "img_s_vanilla", "img_s_maskedkd", "measured_ratio", "flops_ratio",
                "gflop_per_step_vanilla", "gflop_per_step_maskedkd", "peak_tflops", "mfu_vanilla", "mfu_maskedkd",
                "compile_s_vanilla", "compile_s_maskedkd"]
    for k in positive:
        assert math.isfinite(r[k]) and r[k] > 0, k
    assert r["peak_gib_vanilla"] is None and r["peak_gib_maskedkd"] is None  # CUDA allocator stats only
    assert r["flops_ratio"] < 1 and r["num_keep"] == 8 and r["batch"] == 4
    c = r["check"]
    assert c["passed"] and c["finite"] and c["teacher_grads_none"] and c["teacher_unchanged"]
    assert len(c["losses_compiled"]) == len(c["losses_eager"]) == c["steps"] == 3
    assert 0 <= c["max_abs_loss_diff"] <= c["tolerance"] == 5e-2
    tb = r["teacher_bf16"]
    assert tb["error"] is None and tb["top1_agreement"] == 1.0
    # step.cast_matmul_weights casts exactly what autocast casts: the same logits to the bit
    assert tb["max_abs_logit_diff"] == 0.0 and tb["ms_maskedkd_bf16_teacher"] > 0
