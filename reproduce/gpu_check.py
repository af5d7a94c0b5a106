"""One prepared check of the compiled bf16 train step on one CUDA GPU (issue 15, section 4: "Ready for the first GPU").

    bash reproduce/gpu_check.sh [--batch 256] [--iters 50] [--check-steps 20] [--peak-tflops T]
                                [--out results/gpu_check.json] [--warm-cache]
    bash reproduce/gpu_check.sh --cpu-smoke      # the same path on CPU with tiny models (the test suite runs it)

DeiT-Ti student <- DeiT-S teacher, random init, synthetic batches made on the device (no downloads), batch 256,
bf16 autocast (make_train_step(..., precision="auto")), compiled steps, drop-path off (a compiled graph draws its own
random masks, so compiled == eager needs it off). The check runs at the timing batch so that its compiled MaskedKD
step is the one timed: one cold compile fewer. It prints, in this order:
  1. teacher weights held in bf16 vs fp32 under autocast: max |logit difference| (beside autocast's own error);
  2. compiled == eager: `--check-steps` MaskedKD steps of each from the same initial parameters on the same batches,
     max |loss difference| against a bf16 tolerance, teacher without gradients and unchanged, losses finite;
  3. compile time (first call, wall clock, cold inductor cache) and peak memory of each compiled step;
  4. images/s of vanilla KD and MaskedKD 50% (98 of 196 patches), timed interleaved, their step-time ratio beside
     the FLOPs-ledger ratio, MFU against the GPU's dense bf16 peak, and MaskedKD with bf16 vs fp32 teacher weights;
  5. a markdown header and one row for docs/benchmarks.md; the same as JSON in results/gpu_check.json.
--cpu-smoke: 2-block ViTs on 32x32 images (16 patches, 8 kept), batch 4, 3 check steps, bf16 autocast on CPU, the
default inductor cache (~25 s warm, 2-3 min cold on 2 busy cores: CPU inductor builds ~40 C++ kernels per graph).
Expected: about 5 min on an H100/H200, three cold compiles of ~1 min each dominating. Exit status: 0 when the check
passes, 1 when it fails (everything still printed and written), 2 without a CUDA device.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

import maskedkd as mkd
from maskedkd.bench import interleaved
from maskedkd.step import cast_matmul_weights, make_optimizer, make_train_step

# Dense (no sparsity) bf16 tensor-core peak in TFLOP/s, first match on torch.cuda.get_device_name() wins. Source:
# NVIDIA's product datasheets (H100, H200, A100, L40S, L40, A40, A10, L4), which give bf16 "with sparsity"; the
# dense figure is half of it (in brackets). GPUs not listed (A10G, V100, ...) need --peak-tflops; none is guessed.
PEAK_BF16_TFLOPS = (
    (r"H100.*PCIe", 756.0),  # [1513]
    (r"H100 NVL|H200 NVL", 835.0),  # [1671]
    (r"\bG?H(100|200)\b", 989.0),  # SXM, GH200 [1979]
    (r"\bA100\b", 312.0),  # SXM and PCIe [624]
    (r"\bL40S\b", 362.0),  # [733]
    (r"\bL40\b", 181.0),  # [362]
    (r"\bA40\b", 149.7),  # [299.4]
    (r"\bA10\b", 125.0),  # [250]; not the A10G
    (r"\bL4\b", 121.0),  # [242]
)

# Compiled vs eager loss, absolute. bf16: every matmul rounds to bf16 (relative 2^-8 = 0.4%), and inductor rounds at
# other places than eager (it fuses and keeps fp32 inside its kernels); 20 AdamW updates carry the differences
# forward. The loss starts near 3.45 (half of CE = ln 1000, half of a small KL) and falls to ~1.6 in the 20 steps;
# 5e-2 is 1.5% of the starting loss, 3% of its fall, and 25x what DeiT-Ti <- DeiT-S under CPU bf16 autocast
# showed (max 2.0e-3 over 20 steps at batch 8): rounding passes, a trajectory that departs does not.
# fp32 (no autocast): reordered fp32 reductions only, as in tests/test_step.py.
TOLERANCE = {"bf16": 5e-2, "fp32": 1e-4}
CHECK_LR = 5e-4  # DeiT's base learning rate at batch 512: the check follows a loss that moves
NUM_CLASSES_USED = 10  # synthetic labels come from 10 classes, so the loss falls within the check's steps


def peak_tflops(gpu_name: str, override: float | None = None) -> tuple[float | None, str]:
    """(dense bf16 peak TFLOP/s or None, where it came from) for a torch.cuda.get_device_name() string."""
    if override is not None:
        return override, "--peak-tflops"
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return tflops, f"datasheet ({pattern})"
    return None, "unknown GPU: pass --peak-tflops"


def step_flops(s_cfg: mkd.ViTConfig, t_cfg: mkd.ViTConfig, num_keep: int | None, batch: int) -> float:
    """Model FLOPs of one KD step: 2 FLOPs per MAC x batch x (3 S + T_k), flops.training_ledger's per-image MACs
    (student forward + backward = 3x forward, teacher forward on the kept patches; num_keep=None: all)."""
    return 2.0 * batch * mkd.training_ledger(s_cfg, t_cfg, num_keep)["total_masked"]


def mfu(flops: float, seconds: float, tflops: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak (None when the peak is unknown)."""
    return None if tflops is None else flops / seconds / (tflops * 1e12)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_data(cfg: mkd.ViTConfig, batch: int, device: torch.device):
    """i -> batch i (x (b c h w) fp32, y (b,)) of a fixed synthetic set, made on the device: each image is its
    class's fixed random template plus noise, so a student can learn it and the check's loss moves."""
    templates = torch.randn(NUM_CLASSES_USED, cfg.in_chans, *cfg.img_size, device=device,
                            generator=torch.Generator(device).manual_seed(0))

    def batch_i(i: int):
        g = torch.Generator(device).manual_seed(1 + i)
        y = torch.randint(0, NUM_CLASSES_USED, (batch,), device=device, generator=g)
        x = templates[y] + torch.randn(batch, cfg.in_chans, *cfg.img_size, device=device, generator=g)
        return x, y

    return batch_i


def student(cfg: mkd.ViTConfig, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in mkd.init_params(cfg, seed=0).items()}


def teacher_precision(s_cfg, t_cfg, teacher, teacher_bf16, num_keep, x, device) -> dict:
    """Teacher logits on the student's top num_keep patches with fp32 vs bf16 weights, both under bf16 autocast;
    beside them autocast's own error (fp32 weights under autocast vs no autocast)."""
    with torch.no_grad():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            _, scores = mkd.student_forward(student(s_cfg, device), x, s_cfg)  # fp32 scores
            keep = mkd.select_tokens(scores, num_keep)
            fp32_w = mkd.teacher_forward(teacher, x, t_cfg, keep, check=False).float()
            bf16_w = mkd.teacher_forward(teacher_bf16, x, t_cfg, keep, check=False).float()
        exact = mkd.teacher_forward(teacher, x, t_cfg, keep, check=False)
    return {"max_abs_logit_diff": (bf16_w - fp32_w).abs().max().item(),
            "autocast_max_abs_logit_diff": (fp32_w - exact).abs().max().item(),
            "logit_std": exact.std().item(),
            "top1_agreement": (bf16_w.argmax(-1) == fp32_w.argmax(-1)).float().mean().item()}


def loss_check(s_cfg, t_cfg, teacher, num_keep, data, steps, precision, device) -> tuple[dict, dict]:
    """`steps` compiled and `steps` eager MaskedKD steps from the same parameters on the same batches. Returns the
    check and the compiled runner (step, params, optimizer, first-call seconds), reused for timing. The teacher's
    tensors require grad here, so that a step leaking gradient into the teacher would leave a .grad on them."""
    teacher = {k: v.detach().clone().requires_grad_(True) for k, v in teacher.items()}
    before = {k: v.detach().clone() for k, v in teacher.items()}
    losses, runner = {}, {}
    for mode in ("compiled", "eager"):
        params = student(s_cfg, device)
        opt = make_optimizer(params, lr=CHECK_LR)
        step = make_train_step(s_cfg, t_cfg, teacher, num_keep=num_keep, compile=mode == "compiled",
                               precision=precision)
        losses[mode] = []
        for i in range(steps):
            t0 = time.perf_counter()
            losses[mode].append(step(params, opt, *data(i % 4))["loss"].item())
            if mode == "compiled" and i == 0:
                runner = {"step": step, "params": params, "opt": opt, "compile_s": time.perf_counter() - t0}
    diff = max(abs(a - b) for a, b in zip(losses["compiled"], losses["eager"]))
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")  # as step.make_loss_fn
    tol = TOLERANCE["bf16" if bf16 else "fp32"]
    check = {"steps": steps, "max_abs_loss_diff": diff, "tolerance": tol,
             "losses_compiled": losses["compiled"], "losses_eager": losses["eager"],
             "finite": all(math.isfinite(v) for v in losses["compiled"] + losses["eager"]),
             "teacher_grads_none": all(v.grad is None for v in teacher.values()),
             "teacher_unchanged": all(torch.equal(before[k], teacher[k]) for k in teacher)}
    check["passed"] = bool(diff <= tol and check["finite"] and check["teacher_grads_none"]
                           and check["teacher_unchanged"])
    return check, runner


def compiled_runner(s_cfg, t_cfg, teacher, num_keep, x, y, precision, device) -> dict:
    """A compiled KD step on a fixed batch, and the wall clock of its first call (the compile)."""
    params = student(s_cfg, device)
    opt = make_optimizer(params, lr=1e-5)
    step = make_train_step(s_cfg, t_cfg, teacher, num_keep=num_keep, compile=True, precision=precision)
    t0 = time.perf_counter()
    step(params, opt, x, y)
    sync(device)
    return {"step": step, "params": params, "opt": opt, "compile_s": time.perf_counter() - t0}


def peak_gib(fn, device) -> float | None:
    """Peak allocated GiB during one call (resident models and optimizer states included); None on CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def markdown(r: dict) -> tuple[str, str]:
    """(header with its separator line, the one row) for docs/benchmarks.md."""
    def pair(a, b, fmt):
        return "n/a" if a is None or b is None else f"{fmt(a)} / {fmt(b)}"

    c = r["check"]
    verdict = "PASS" if c["passed"] else "FAIL"
    cells = {
        "date": r["date"], "GPU": r["gpu"], "versions": f"torch {r['torch']}, CUDA {r['cuda']}, Python {r['python']}",
        "batch": str(r["batch"]), "vanilla KD img/s": f"{r['img_s_vanilla']:.0f}",
        "MaskedKD img/s": f"{r['img_s_maskedkd']:.0f}", "measured ratio": f"{r['measured_ratio']:.3f}",
        "FLOPs ratio": f"{r['flops_ratio']:.3f}",
        "MFU vanilla / MaskedKD": pair(r["mfu_vanilla"], r["mfu_maskedkd"], lambda v: f"{100 * v:.1f}%"),
        "compile s vanilla / MaskedKD": pair(r["compile_s_vanilla"], r["compile_s_maskedkd"], lambda v: f"{v:.0f}"),
        "peak GiB vanilla / MaskedKD": pair(r["peak_gib_vanilla"], r["peak_gib_maskedkd"], lambda v: f"{v:.2f}"),
        f"{c['steps']}-step check": f"{verdict} ({c['max_abs_loss_diff']:.1e} ≤ {c['tolerance']:.0e})"
        if c["passed"] else f"{verdict} ({c['max_abs_loss_diff']:.1e} vs {c['tolerance']:.0e})",
    }
    row = "| " + " | ".join(v.replace("|", "/") for v in cells.values()) + " |"
    header = "| " + " | ".join(cells) + " |\n|" + "---|" * len(cells)
    return header, row


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Compiled bf16 MaskedKD step on one CUDA GPU: speed, MFU, compile, "
                                             "memory, compiled == eager")
    ap.add_argument("--batch", type=int, help="timing and check batch (default 256; --cpu-smoke 4)")
    ap.add_argument("--iters", type=int, help="timed interleaved rounds (default 50; --cpu-smoke 3)")
    ap.add_argument("--check-steps", type=int, help="steps of the compiled == eager check (default 20; smoke 3)")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, overriding the table")
    ap.add_argument("--out", type=Path, default=Path("results/gpu_check.json"))
    ap.add_argument("--warm-cache", action="store_true",
                    help="keep the default inductor cache (then compile s may be warm; --cpu-smoke always does)")
    ap.add_argument("--cpu-smoke", action="store_true", help="run the whole path on CPU with tiny 2-block ViTs")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    args.batch = args.batch or (4 if smoke else 256)
    args.iters = args.iters or (3 if smoke else 50)
    args.check_steps = args.check_steps or (3 if smoke else 20)
    return args


def setup(args) -> tuple[torch.device, str, mkd.ViTConfig, mkd.ViTConfig, str]:
    """(device, precision, student config, teacher config, device name); exits 2 without a GPU unless smoke."""
    if args.cpu_smoke:
        s_cfg = mkd.ViTConfig(name="smoke_student_2x32", img_size=32, patch_size=8, num_classes=10, embed_dim=32,
                              depth=2, num_heads=2)
        return torch.device("cpu"), "bf16", s_cfg, s_cfg.replace(name="smoke_teacher_2x48", embed_dim=48,
                                                                  num_heads=3), "CPU smoke (no GPU)"
    if not torch.cuda.is_available():
        print(f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU; run this "
              f"on a CUDA machine, or `bash reproduce/gpu_check.sh --cpu-smoke` for the CPU path", file=sys.stderr)
        sys.exit(2)
    return (torch.device("cuda"), "auto", mkd.vit_config("deit_tiny_patch16_224"),
            mkd.vit_config("deit_small_patch16_224"), torch.cuda.get_device_name())


def main(argv=None) -> dict:
    args = parse(argv)
    device, precision, s_cfg, t_cfg, gpu = setup(args)
    cold = not (args.warm_cache or args.cpu_smoke)
    if cold:  # a fresh inductor (and triton) cache: "compile s" is a cold compile
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpu_check_inductor_")
    num_keep = mkd.keep_count(s_cfg.num_patches, 0.5)
    print(f"{gpu}: {s_cfg.name} student <- {t_cfg.name} teacher, batch {args.batch}, {num_keep} of "
          f"{s_cfg.num_patches} patches kept, precision={precision}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")
    teacher = {k: v.to(device) for k, v in mkd.init_params(t_cfg, seed=1).items()}
    # the training program's cast (step.cast_matmul_weights: matmul weights bf16, norms/biases/embeddings fp32), which
    # autocast makes bit-identical to fp32 weights; casting every tensor would also make the residual stream bf16
    teacher_bf16 = cast_matmul_weights(teacher)
    data = synthetic_data(s_cfg, args.batch, device)
    x, y = data(0)

    t_prec = teacher_precision(s_cfg, t_cfg, teacher, teacher_bf16, num_keep, x, device)
    print(f"[1] teacher logits, bf16 vs fp32 weights under autocast: max |diff| {t_prec['max_abs_logit_diff']:.2e} "
          f"(autocast vs fp32: {t_prec['autocast_max_abs_logit_diff']:.2e}; logit std {t_prec['logit_std']:.2f}), "
          f"top-1 agreement {100 * t_prec['top1_agreement']:.1f}%")

    t0 = time.perf_counter()
    check, masked = loss_check(s_cfg, t_cfg, teacher, num_keep, data, args.check_steps, precision, device)
    print(f"[2] compiled == eager, {check['steps']} MaskedKD steps ({time.perf_counter() - t0:.0f} s): loss "
          f"{check['losses_eager'][0]:.3f} -> {check['losses_eager'][-1]:.3f}, max |compiled - eager| "
          f"{check['max_abs_loss_diff']:.2e} (tolerance {check['tolerance']:.0e}), finite {check['finite']}, teacher "
          f"without grads {check['teacher_grads_none']}, unchanged {check['teacher_unchanged']}: "
          f"{'PASS' if check['passed'] else 'FAIL'}")

    runners = {"vanilla_kd": compiled_runner(s_cfg, t_cfg, teacher, None, x, y, precision, device),
               "maskedkd": masked}
    bf16_error = None
    try:
        runners["maskedkd_bf16_teacher"] = compiled_runner(s_cfg, t_cfg, teacher_bf16, num_keep, x, y, precision,
                                                           device)
    except Exception as e:  # report, do not hide: make_train_step with bf16 teacher weights
        bf16_error = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    calls = {k: (lambda r=r: r["step"](r["params"], r["opt"], x, y)) for k, r in runners.items()}
    peaks = {k: peak_gib(f, device) for k, f in calls.items()}
    for k, r in runners.items():
        mem = "n/a (CPU)" if peaks[k] is None else f"{peaks[k]:.2f} GiB"
        print(f"[3] {k:22s} compile (first call) {r['compile_s']:6.1f} s, peak memory {mem}")

    sec = interleaved(calls, args.iters, device)
    tflops, peak_source = peak_tflops(gpu if device.type == "cuda" else "", args.peak_tflops)
    flops = {"vanilla_kd": step_flops(s_cfg, t_cfg, None, args.batch),
             "maskedkd": step_flops(s_cfg, t_cfg, num_keep, args.batch)}
    led = mkd.training_ledger(s_cfg, t_cfg, num_keep)
    r = {"date": datetime.date.today().isoformat(), "gpu": gpu, "torch": torch.__version__,
         "cuda": torch.version.cuda, "python": platform.python_version(), "student": s_cfg.name,
         "teacher": t_cfg.name, "num_keep": num_keep, "batch": args.batch, "iters": args.iters,
         "precision": precision, "ms_vanilla": 1e3 * sec["vanilla_kd"], "ms_maskedkd": 1e3 * sec["maskedkd"],
         "img_s_vanilla": args.batch / sec["vanilla_kd"], "img_s_maskedkd": args.batch / sec["maskedkd"],
         "measured_ratio": sec["maskedkd"] / sec["vanilla_kd"],
         "flops_ratio": led["total_masked"] / led["total_full"],
         "gflop_per_step_vanilla": flops["vanilla_kd"] / 1e9, "gflop_per_step_maskedkd": flops["maskedkd"] / 1e9,
         "peak_tflops": tflops, "peak_source": peak_source,
         "mfu_vanilla": mfu(flops["vanilla_kd"], sec["vanilla_kd"], tflops),
         "mfu_maskedkd": mfu(flops["maskedkd"], sec["maskedkd"], tflops),
         "compile_s_vanilla": runners["vanilla_kd"]["compile_s"], "compile_s_maskedkd": masked["compile_s"],
         "cold_cache": cold,
         "peak_gib_vanilla": peaks["vanilla_kd"], "peak_gib_maskedkd": peaks["maskedkd"],
         "check": check,
         "teacher_bf16": {**t_prec, "error": bf16_error, "ms_maskedkd_fp32_teacher": 1e3 * sec["maskedkd"]}}
    if bf16_error is None:
        r["teacher_bf16"].update({"ms_maskedkd_bf16_teacher": 1e3 * sec["maskedkd_bf16_teacher"],
                                  "time_ratio_bf16_over_fp32": sec["maskedkd_bf16_teacher"] / sec["maskedkd"],
                                  "compile_s": runners["maskedkd_bf16_teacher"]["compile_s"],
                                  "peak_gib": peaks["maskedkd_bf16_teacher"]})
    r["markdown_header"], r["markdown_row"] = markdown(r)

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"

    print(f"[4] vanilla KD {r['img_s_vanilla']:8.0f} img/s ({r['ms_vanilla']:.1f} ms, MFU {pct(r['mfu_vanilla'])})")
    print(f"    MaskedKD   {r['img_s_maskedkd']:8.0f} img/s ({r['ms_maskedkd']:.1f} ms, MFU {pct(r['mfu_maskedkd'])})"
          f"; peak {tflops or 'n/a'} TFLOP/s from {peak_source}")
    print(f"    step-time ratio MaskedKD / vanilla {r['measured_ratio']:.3f}, "
          f"FLOPs-ledger ratio {r['flops_ratio']:.3f}")
    tb = r["teacher_bf16"]
    if bf16_error is None:
        print(f"    MaskedKD with bf16 teacher weights {tb['ms_maskedkd_bf16_teacher']:.1f} ms vs fp32 "
              f"{tb['ms_maskedkd_fp32_teacher']:.1f} ms (x{tb['time_ratio_bf16_over_fp32']:.3f})")
    else:
        print(f"    MaskedKD with bf16 teacher weights FAILED in make_train_step: {bf16_error}")
    print(f"[5] row for docs/benchmarks.md:\n{r['markdown_header']}\n{r['markdown_row']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1) + "\n")
    print(f"wrote {args.out}")
    return r


if __name__ == "__main__":
    sys.exit(0 if main()["check"]["passed"] else 1)
