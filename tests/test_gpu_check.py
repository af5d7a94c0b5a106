"""reproduce/gpu_check.sh: MFU arithmetic, the peak table, the no-GPU exit, its whole path on CPU (--cpu-smoke)."""
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

import maskedkd as mkd

ROOT = Path(__file__).resolve().parents[1]
from reproduce import gpu_check

TI, S = mkd.vit_config("deit_tiny_patch16_224"), mkd.vit_config("deit_small_patch16_224")


def test_step_flops_and_mfu_match_the_papers_gmacs_by_hand():
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
def test_cpu_smoke_runs_the_whole_script_and_its_tables_come_from_its_json(tmp_path):
    """Every section on tiny models (the compiled MaskedKD step and one compiled teacher; the rest eager): about a
    minute with a cold inductor cache on 2 cores."""
    out = tmp_path / "gpu_check.json"
    p = subprocess.run(["bash", "reproduce/gpu_check.sh", "--cpu-smoke", "--peak-tflops", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["markdown"] == gpu_check.render(r) and r["markdown"] in p.stdout  # printed tables = the JSON's
    assert r["skipped"] == {}

    c = r["check"]
    assert c["passed"] and c["finite"] and c["teacher_grads_none"] and c["teacher_unchanged"]
    assert len(c["losses_compiled"]) == len(c["losses_eager"]) == c["steps"] == 3
    assert 0 <= c["max_abs_loss_diff"] <= c["tolerance"] == 5e-2
    tb = r["teacher_bf16"]  # precision.cast_matmul_weights casts exactly what autocast casts: the same logits to the bit
    assert tb["max_abs_logit_diff"] == 0.0 and tb["top1_agreement"] == 1.0

    s = r["step"]
    assert list(s["rows"]) == list(gpu_check.STEP_ROWS)
    assert s["rows"].pop("maskedkd_bf16_teacher") == {"label": gpu_check.STEP_ROWS["maskedkd_bf16_teacher"][0],
                                                       "note": "not run in --cpu-smoke"}
    assert [k for k, v in s["rows"].items() if not v["compiled"]] == ["vanilla_kd", "timm_logit_task", "ours_masked_task"]
    for k, row in s["rows"].items():
        masked = gpu_check.STEP_ROWS[k][1]
        assert row["num_keep"] == (8 if masked else 16), k
        assert math.isclose(row["img_s"], s["batch"] / (row["ms"] / 1e3)), k
        flops = gpu_check.step_flops(*gpu_check.smoke_configs()[:2], 8 if masked else None, s["batch"])
        assert math.isclose(row["mfu"], gpu_check.mfu(flops, row["ms"] / 1e3, 1.0)), k
        assert row["compile_s"] > 0 and row["peak_gib"] is None, k  # CUDA allocator stats only
    rate = {k: v["img_s"] for k, v in s["rows"].items()}
    assert math.isclose(s["maskedkd_speedup"], rate["maskedkd"] / rate["vanilla_kd"])
    assert math.isclose(s["ours_over_timm_vanilla"], rate["vanilla_kd"] / rate["timm_logit_task"])
    assert s["ledger_speedup"] > 1 and s["goals"]["ours_vs_timm"]["met"] == (rate["vanilla_kd"] >= rate["timm_logit_task"])

    t = r["teachers"]
    assert [(x["teacher"], x["kept_pct"]) for x in t["rows"]] == [
        (n, k) for n in ("DeiT-S", "CaiT-S24") for k in gpu_check.KEPT_PCT]
    for x in t["rows"]:
        for mode in ("eager", "compiled") if x["teacher"] == "DeiT-S" else ("eager",):  # smoke: CaiT eager only
            assert x[f"img_s_{mode}"] > 0
            if x["kept_pct"] == 100:
                assert x[f"ratio_{mode}"] == 1.0
    macs = [x["macs_ratio"] for x in t["rows"] if x["teacher"] == "DeiT-S"]
    assert macs[0] == 1.0 and macs == sorted(macs)  # fewer patches, fewer MACs
    assert {(x["teacher"], x["kept_pct"]): x["paper_ratio"] for x in t["rows"]}[("DeiT-S", 50)] == 2.1  # table 1

    ld = r["loader"]
    assert [(x["path"], x["workers"]) for x in ld["runs"]] == [(p, w) for p in ("pil", "uint8", "uint8-randaug")
                                                               for w in (1, 2)]
    assert all(x["img_s"] > 0 for x in ld["runs"])
    assert (ld["per_core_img_s"], ld["per_core_img_s_uint8"], ld["per_core_img_s_uint8_randaug"]) == (
        ld["runs"][0]["img_s"], ld["runs"][2]["img_s"], ld["runs"][4]["img_s"])
    assert math.isclose(ld["cores_needed"]["maskedkd"], rate["maskedkd"] / ld["per_core_img_s"])


def test_docs_gpu_block_is_rendered_from_the_committed_runs():
    """docs/benchmarks.md's GPU block == the render of reproduce/reference/gpu/*.json (none typed by hand)."""
    runs = sorted(gpu_check.REFERENCE.glob("*.json"))
    assert runs, "no committed GPU run"
    assert gpu_check.DOCS.read_text() == gpu_check.render_docs()
    for path in runs:
        r = json.loads(path.read_text())
        assert r["markdown"] == gpu_check.render(r)  # the run printed what the docs show
        assert r["check"]["passed"] and r["machine"]["gpu"] in gpu_check.DOCS.read_text()


def test_render_docs_refuses_a_lost_marker(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text(f"a\n{gpu_check.BEGIN}\nold\n")
    with pytest.raises(ValueError, match="needs exactly one"):
        gpu_check.render_docs([], doc)
    doc.write_text(f"a\n{gpu_check.BEGIN}\nold\n{gpu_check.END}\nz\n")
    assert gpu_check.render_docs([], doc) == f"a\n{gpu_check.BEGIN}\nNo GPU run committed yet.\n{gpu_check.END}\nz\n"
