"""Every GPU question in one run on one CUDA GPU: the step against timm's own task, the paper's teacher throughput, and
the input pipeline.

    bash reproduce/gpu_check.sh [--batch 256] [--iters 30] [--check-steps 20] [--budget-s 420] [--out FILE]
    bash reproduce/gpu_check.sh --cpu-smoke      # the same path on CPU with tiny models (the test suite runs it)
    bash reproduce/gpu_check.sh --render-docs    # docs/benchmarks.md's GPU block from reproduce/reference/gpu/*.json

Random weights, synthetic batches made on the device, bf16 autocast, nothing downloaded. Sections, in this order:
  [0] the machine: versions, and the bf16 GEMM rate measured here (an 8192^3 matmul), the peak MFU is taken against;
  [1] teacher weights held in bf16 vs fp32 under autocast: max |logit difference| (beside autocast's own error);
  [2] compiled == eager: `--check-steps` MaskedKD steps of each from the same parameters on the same batches;
  [3] the step, side by side in one process (DeiT-Ti <- DeiT-S, batch 256, compiled, drop-path off): our vanilla KD
      and MaskedKD 50% steps (`make_train_step`), timm's `LogitDistillationTask` compiled as timm compiles it
      (`task.compile()`, forward/backward/AdamW around it as timm's train loop), and our `MaskedLogitDistillationTask`
      (50%), each with the same fused AdamW; images/s, MFU from the FLOPs ledger, peak memory, compile seconds, timed
      interleaved; the project's goals (vanilla >= 10,000 img/s, MaskedKD / vanilla >= 1.35 (the ledger's ideal:
      1.39), MFU >= 30%, ours >= timm's task at equal work);
  [4] table 1's throughput column: the masked teacher of every paper teacher architecture at 100/75/50/40/25% kept,
      bf16 weights under autocast, random kept patches, img/s eager and compiled (one static graph for all patches,
      one graph for every kept count: the kept count is a dynamic dimension), the ratio to the unmasked teacher
      beside the MACs ratio and the paper's (arXiv 2302.10494, table 1);
  [5] the input pipeline: DeiT's training recipe (`FolderData`: JPEG decode, random resized crop, RandAugment,
      erasing, repeated augmentation; MixUp/CutMix on the device) on generated JPEGs of ImageNet's usual sizes, images/s
      with 1 worker (the per-core rate) and with the program's worker count, and the cores one GPU's step needs.
Sections that do not fit `--budget-s` (counted from the start) are skipped and say so; the JSON is rewritten after each
section, so a run stopped from outside still leaves what it measured. Exit status: 0 when the checks ([1] top-1
agreement, [2]) pass, 1 when one fails, 2 without a CUDA device.
--cpu-smoke: 2-block ViTs on 32x32 images (16 patches), batch 4, 2 teacher architectures (the second eager only),
vanilla KD and the timm tasks eager, no bf16-teacher row (fewer CPU compiles), tiny JPEGs, the default inductor cache.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import maskedkd as mkd
from maskedkd.bench import Clock, bench_loader, interleaved, machine, run_sections, sync, teacher_rates
from maskedkd.checkpoint import atomic_write
from maskedkd.optim import make_optimizer
from maskedkd.precision import cast_matmul_weights, uses_bf16
from maskedkd.step import make_train_step
from reproduce.lib import flags

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reproduce" / "reference" / "gpu"  # committed runs, rendered into docs/benchmarks.md
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN gpu_check (generated: bash reproduce/gpu_check.sh --render-docs) -->", "<!-- END gpu_check -->"

# Dense (no sparsity) bf16 tensor-core peak in TFLOP/s, first match on torch.cuda.get_device_name() wins. Source:
# NVIDIA's product datasheets (H100, H200, A100, L40S, L40, A40, A10, L4), which give bf16 "with sparsity"; the
# dense figure is half of it (in brackets). Printed beside the GEMM rate measured in the run, which MFU is taken
# against.
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

# The project's goals for the step at batch 256 (DeiT-Ti <- DeiT-S, bf16, compiled).
GOALS = {"vanilla_img_s": 10_000.0, "maskedkd_speedup": 1.35, "mfu": 0.30}

# [4]: the paper's teachers (reproduce.lib.paper.TEACHER_ARCH names), the kept fractions of table 1, and a batch per
# architecture large enough to fill an H100-class GPU (about 0.2-0.5 PFLOP per call unmasked).
TEACHERS = ("DeiT-S", "DeiT3-S", "DeiT-B", "DeiT3-B", "CLIP-B/16", "CaiT-S24", "DeiT3-L", "DeiT3-H-1k")
TEACHER_BATCH = {"DeiT-S": 1024, "DeiT3-S": 1024, "DeiT-B": 512, "DeiT3-B": 512, "CLIP-B/16": 512, "CaiT-S24": 512,
                 "DeiT3-L": 256, "DeiT3-H-1k": 128}
KEPT_PCT = (100, 75, 50, 40, 25)


def peak_tflops(gpu_name: str, override: float | None = None) -> tuple[float | None, str]:
    """(dense bf16 datasheet peak TFLOP/s or None, where it came from) for a torch.cuda.get_device_name() string."""
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


def gemm_tflops(device: torch.device, n: int, iters: int) -> float:
    """bf16 (n x n) @ (n x n) on random data: the mean rate of `iters` products after 3 warm-ups, in TFLOP/s."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n ** 3 * iters / (time.perf_counter() - t) / 1e12


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
        step = make_train_step(s_cfg, view=mkd.TeacherView(t_cfg, teacher, num_keep),
                               compile=mode == "compiled", precision=precision)
        losses[mode] = []
        for i in range(steps):
            t0 = time.perf_counter()
            losses[mode].append(step(params, opt, *data(i % 4))["loss"].item())
            if mode == "compiled" and i == 0:
                runner = {"step": step, "params": params, "opt": opt, "compile_s": time.perf_counter() - t0}
    diff = max(abs(a - b) for a, b in zip(losses["compiled"], losses["eager"]))
    tol = TOLERANCE["bf16" if uses_bf16(device.type, precision) else "fp32"]
    check = {"steps": steps, "max_abs_loss_diff": diff, "tolerance": tol,
             "losses_compiled": losses["compiled"], "losses_eager": losses["eager"],
             "finite": all(math.isfinite(v) for v in losses["compiled"] + losses["eager"]),
             "teacher_grads_none": all(v.grad is None for v in teacher.values()),
             "teacher_unchanged": all(torch.equal(before[k], teacher[k]) for k in teacher)}
    check["passed"] = bool(diff <= tol and check["finite"] and check["teacher_grads_none"]
                           and check["teacher_unchanged"])
    return check, runner


def compiled_runner(s_cfg, t_cfg, teacher, num_keep, x, y, precision, device, compile: bool = True) -> dict:
    """A compiled KD step on a fixed batch, and the wall clock of its first call (the compile; compile=False: eager,
    the CPU smoke's shortcut)."""
    params = student(s_cfg, device)
    opt = make_optimizer(params, lr=1e-5)
    step = make_train_step(s_cfg, view=mkd.TeacherView(t_cfg, teacher, num_keep), compile=compile,
                           precision=precision)
    t0 = time.perf_counter()
    step(params, opt, x, y)
    sync(device)
    call = lambda: step(params, opt, x, y)  # noqa: E731
    return {"call": call, "compile_s": time.perf_counter() - t0, "compiled": compile}


# ---------------------------------------------------------------------------------------------------------------
# [3] the peer: timm's LogitDistillationTask, and ours as a timm task

def timm_modules(s_cfg: mkd.ViTConfig, t_cfg: mkd.ViTConfig, device):
    """timm student and teacher modules of our two configs (random init, drop path and dropout off)."""
    import timm

    def make(cfg, seed):
        torch.manual_seed(seed)
        if cfg.name in timm.list_models():
            m = timm.create_model(cfg.name, pretrained=False)
        else:  # the smoke configs: timm's ViT with the same shape
            m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=cfg.img_size[0],
                                  patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
                                  num_heads=cfg.num_heads, num_classes=cfg.num_classes)
        return m.to(device)

    return make(s_cfg, 0), make(t_cfg, 1)


def task_runner(kind: str, s_cfg, t_cfg, num_keep, x, y, device, compile: bool = True) -> dict:
    """timm's training step around a task: bf16 autocast forward, backward, AdamW (our make_optimizer: the same
    fused update and groups as our steps), zero_grad. kind: "timm" (LogitDistillationTask) or "ours"
    (MaskedLogitDistillationTask at num_keep). Compiled with task.compile(), timm's way (compile=False: eager, the
    CPU smoke's shortcut)."""
    from timm.task import LogitDistillationTask
    from maskedkd.timm_task import MaskedLogitDistillationTask
    s_mod, t_mod = timm_modules(s_cfg, t_cfg, device)
    if kind == "timm":
        task = LogitDistillationTask(s_mod, t_mod, task_loss_weight=0.5, device=device, verbose=False)
    else:
        task = MaskedLogitDistillationTask(s_mod, t_mod, task_loss_weight=0.5, num_keep=num_keep, device=device,
                                           verbose=False)
    task.train()
    opt = make_optimizer(dict(task.get_trainable_module().named_parameters()), lr=1e-5)
    if compile:
        task.compile()

    def call():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = task(x, y)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out

    t0 = time.perf_counter()
    call()
    sync(device)
    return {"call": call, "compile_s": time.perf_counter() - t0, "compiled": compile}


def peak_gib(fn, device) -> float | None:
    """Peak allocated GiB during one call (resident models and optimizer states included); None on CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


STEP_ROWS = {  # key: (label, masked?)
    "vanilla_kd": ("ours: vanilla KD step", False),
    "maskedkd": ("ours: MaskedKD 50% step", True),
    "timm_logit_task": ("timm LogitDistillationTask", False),
    "ours_masked_task": ("ours: MaskedLogitDistillationTask 50%", True),
    "maskedkd_bf16_teacher": ("ours: MaskedKD 50%, bf16 teacher weights", True),
}


def step_section(s_cfg, t_cfg, teacher, teacher_bf16, num_keep, x, y, masked_runner, precision, device, iters,
                 clock: Clock, peak: float | None, smoke: bool = False) -> dict:
    """[3]: every runner compiled, then timed interleaved. Optional rows (timm peer, our task, bf16 teacher) are
    skipped, with a note, when their compiles would not fit the budget or fail (the error is kept). smoke: vanilla
    KD and the two timm tasks run eager and the bf16-teacher row is left out (fewer CPU compiles in the test suite;
    the compiled MaskedKD step of [2] is still timed)."""
    runners = {"vanilla_kd": compiled_runner(s_cfg, t_cfg, teacher, None, x, y, precision, device, not smoke),
               "maskedkd": masked_runner}
    notes = {}
    optional = {"timm_logit_task": lambda: task_runner("timm", s_cfg, t_cfg, None, x, y, device, not smoke),
                "ours_masked_task": lambda: task_runner("ours", s_cfg, t_cfg, num_keep, x, y, device, not smoke),
                "maskedkd_bf16_teacher": lambda: compiled_runner(s_cfg, t_cfg, teacher_bf16, num_keep, x, y,
                                                                 precision, device)}
    if smoke:
        del optional["maskedkd_bf16_teacher"]
        notes["maskedkd_bf16_teacher"] = "not run in --cpu-smoke"
    per_compile = max(r["compile_s"] for r in runners.values())
    for k, make in optional.items():
        if clock.left() < per_compile + 180:  # leave the loader and the eager teachers their minutes
            notes[k] = f"skipped: {clock.left():.0f} s of the budget left, a compile took {per_compile:.0f} s"
            continue
        try:
            runners[k] = make()
        except Exception as e:  # reported in the table and the JSON, never hidden
            notes[k] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    peaks = {k: peak_gib(r["call"], device) for k, r in runners.items()}
    sec = interleaved({k: r["call"] for k, r in runners.items()}, iters, device)
    batch = x.shape[0]
    rows = {}
    for k, (label, masked) in STEP_ROWS.items():
        if k not in runners:
            rows[k] = {"label": label, "note": notes.get(k, "not run")}
            continue
        flops = step_flops(s_cfg, t_cfg, num_keep if masked else None, batch)
        rows[k] = {"label": label, "num_keep": num_keep if masked else s_cfg.num_patches, "ms": 1e3 * sec[k],
                   "img_s": batch / sec[k], "gflop_per_step": flops / 1e9, "mfu": mfu(flops, sec[k], peak),
                   "compile_s": runners[k]["compile_s"], "compiled": runners[k].get("compiled", True),
                   "peak_gib": peaks[k]}
    led = mkd.training_ledger(s_cfg, t_cfg, num_keep)

    def ratio(a, b):
        return rows[a]["img_s"] / rows[b]["img_s"] if "img_s" in rows[a] and "img_s" in rows[b] else None

    out = {"batch": batch, "iters": iters, "rows": rows,
           "maskedkd_speedup": ratio("maskedkd", "vanilla_kd"),
           "ledger_speedup": led["total_full"] / led["total_masked"],
           "ours_over_timm_vanilla": ratio("vanilla_kd", "timm_logit_task"),
           "ours_step_over_our_task_masked": ratio("maskedkd", "ours_masked_task"),
           "our_task_over_timm_task": ratio("ours_masked_task", "timm_logit_task")}
    v, m = rows["vanilla_kd"], rows["maskedkd"]
    out["goals"] = {
        "vanilla_img_s": {"goal": GOALS["vanilla_img_s"], "value": v["img_s"], "met": v["img_s"] >= GOALS["vanilla_img_s"]},
        "maskedkd_speedup": {"goal": GOALS["maskedkd_speedup"], "value": out["maskedkd_speedup"],
                             "met": out["maskedkd_speedup"] >= GOALS["maskedkd_speedup"]},
        "mfu": {"goal": GOALS["mfu"], "value": v["mfu"], "met": None if v["mfu"] is None else
                min(v["mfu"], m["mfu"]) >= GOALS["mfu"]},
        "ours_vs_timm": {"goal": 1.0, "value": out["ours_over_timm_vanilla"],
                         "met": None if out["ours_over_timm_vanilla"] is None else out["ours_over_timm_vanilla"] >= 1.0},
    }
    return out


# ---------------------------------------------------------------------------------------------------------------
# [4] table 1's throughput column

def paper_ratios() -> dict[tuple[str, int], float]:
    """(teacher, kept %) -> the img/s ratio masked / unmasked the paper prints in table 1 (first row that has it)."""
    from reproduce.lib.paper import TABLE1
    out = {}
    for r in TABLE1:
        if r.teacher and r.kept and r.img_s_ratio is not None:
            out.setdefault((r.teacher, r.kept), r.img_s_ratio)
    return out


def teacher_rows(names, cfgs, batches) -> dict:
    """[4]'s table before it is measured: (teacher, kept %) -> its row (kept count, MACs ratio, the paper's ratio)."""
    paper, rows = paper_ratios(), {}
    for name in names:
        cfg = cfgs[name]
        for p in KEPT_PCT:
            k = mkd.keep_count(cfg.num_patches, p / 100)
            rows[name, p] = {"teacher": name, "arch": cfg.name, "batch": batches[name], "kept_pct": p, "num_keep": k,
                             "num_patches": cfg.num_patches,
                             "macs_ratio": mkd.macs(cfg) / mkd.macs(cfg, None if p == 100 else k),
                             "paper_ratio": paper.get((name, p))}
    return rows


def measure_teacher(rows: dict, name: str, cfg, batch: int, mode: str, iters: int, device) -> None:
    """[4], one teacher in one mode (eager or compiled): img/s at every kept fraction (bf16 weights under autocast,
    random kept patches: maskedkd.bench.teacher_rates) and the ratio to the same mode's unmasked teacher, written
    into its rows."""
    counts = {p: None if p == 100 else rows[name, p]["num_keep"] for p in KEPT_PCT}
    sec, first_s = teacher_rates(cfg, list(counts.values()), batch, iters, device, compiled=mode == "compiled",
                                 bf16=True)
    for p, k in counts.items():
        rows[name, p].update({f"img_s_{mode}": batch / sec[k], f"ratio_{mode}": sec[None] / sec[k],
                              f"first_calls_s_{mode}": first_s})
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------
# output

def _fmt(v, spec, missing="–"):
    return missing if v is None else format(v, spec)


def render(r: dict) -> str:
    """The run's tables in markdown (printed, and docs/benchmarks.md's generated block)."""
    m = r["machine"]
    out = [f"### {m['gpu']}, {r['date']}",
           "",
           f"torch {m['torch']}, CUDA {m['cuda']}, timm {m['timm']}, Pillow {m['pillow']}, Python {m['python']}, "
           f"{m.get('cores', m.get('cpu_count'))} CPU cores. bf16 GEMM {m['gemm_n']}^3 measured: {_fmt(m['gemm_tflops'], '.0f')} TFLOP/s "
           f"(datasheet dense peak {_fmt(m['datasheet_tflops'], '.0f')}); MFU below is against the measured rate. "
           f"Wall time of the run: {r['wall_s']:.0f} s.", ""]
    c, tp = r.get("check"), r.get("teacher_bf16")
    if tp:
        out += [f"Teacher with bf16 matmul weights vs fp32 under autocast: max |logit diff| "
                f"{tp['max_abs_logit_diff']:.2e}, top-1 agreement {100 * tp['top1_agreement']:.1f}%.", ""]
    if c and "error" in c:
        out += [f"Compiled == eager check FAILED with an error: {c['error'].strip().splitlines()[-1]}", ""]
    elif c:
        out += [f"Compiled == eager over {c['steps']} MaskedKD steps: max |loss diff| {c['max_abs_loss_diff']:.1e} "
                f"(tolerance {c['tolerance']:.0e}): {'PASS' if c['passed'] else 'FAIL'}.", ""]
    s = r.get("step")
    if s:
        out += [f"**The step** ({r['student']} <- {r['teacher']}, batch {s['batch']}, bf16, compiled, "
                f"median of {s['iters']} interleaved rounds)", "",
                "| step | patches the teacher sees | img/s | ms | MFU | peak GiB | compile s |", "|---|---|---|---|---|---|---|"]
        for row in s["rows"].values():
            if "img_s" not in row:
                out.append(f"| {row['label']} | – | {row['note']} | | | | |")
                continue
            out.append(f"| {row['label']}{'' if row.get('compiled', True) else ' (eager)'} | {row['num_keep']} | "
                       f"{row['img_s']:.0f} | {row['ms']:.1f} | {_fmt(row['mfu'] and 100 * row['mfu'], '.1f')}% | "
                       f"{_fmt(row['peak_gib'], '.2f')} | {row['compile_s']:.0f} |")
        g = s["goals"]
        out += ["", f"MaskedKD / vanilla speed-up x{_fmt(s['maskedkd_speedup'], '.3f')} (FLOPs ledger's ideal "
                f"x{s['ledger_speedup']:.3f}); ours / timm's task at equal work (vanilla KD): "
                f"x{_fmt(s['ours_over_timm_vanilla'], '.3f')}; our MaskedKD step / our timm task: "
                f"x{_fmt(s['ours_step_over_our_task_masked'], '.3f')}.", "",
                "Goals: " + "; ".join(f"{k} {_fmt(v['value'], '.3g')} vs {v['goal']:g}: "
                                      f"{'met' if v['met'] else ('not met' if v['met'] is False else 'n/a')}"
                                      for k, v in g.items()) + ".", ""]
    t = r.get("teachers")
    if t:
        out += ["**The masked teacher's throughput** (table 1's img/s column: ratio to the same teacher with every "
                "patch, bf16 weights, random kept patches)", "",
                "| teacher | batch | kept | patches | img/s eager | ratio eager | img/s compiled | ratio compiled "
                "| MACs ratio | paper ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in t["rows"]:
            out.append(f"| {row['teacher']} | {row['batch']} | {row['kept_pct']}% | {row['num_keep']} of "
                       f"{row['num_patches']} | {_fmt(row.get('img_s_eager'), '.0f')} | "
                       f"x{_fmt(row.get('ratio_eager'), '.2f')} | {_fmt(row.get('img_s_compiled'), '.0f')} | "
                       f"x{_fmt(row.get('ratio_compiled'), '.2f')} | x{row['macs_ratio']:.2f} | "
                       f"{'x' + format(row['paper_ratio'], '.1f') if row['paper_ratio'] else '–'} |")
        for k, v in t.get("notes", {}).items():  # the runs before [4] was one section per teacher
            out.append(f"\n{k}: {v}")
        out.append("")
    ld = r.get("loader")
    if ld:
        sizes = ", ".join(f"{w}x{h}" for w, h in ld["sizes"])
        out += [f"**The input pipeline** (`FolderData`, DeiT's recipe: {ld['distinct_images']} generated JPEGs of "
                f"{sizes} px, mean {ld['mean_kib']:.0f} KiB, linked to {ld['images']} files; to {ld['img_size']} px, "
                f"batch {ld['batch']}, MixUp/CutMix on the device; {ld['cpu_count']} CPU cores)", "",
                *(["| path | DataLoader workers | img/s |", "|---|---|---|"] if "path" in ld["runs"][0] else
                  ["| DataLoader workers | img/s |", "|---|---|"])]
        out += [(f"| {x['path']} " if "path" in x else "") + f"| {x['workers']} | "
                f"{_fmt(x['img_s'], '.0f') if x.get('img_s') is not None else 'failed: ' + x.get('error', '')} |"
                for x in ld["runs"]]
        need = "; ".join(f"{k}: {_fmt(v, '.0f')} cores" for k, v in ld["cores_needed"].items())
        uint8 = (f" ({_fmt(ld['per_core_img_s_uint8'], '.0f')} img/s with uint8 batches, normalised and erased on "
                 f"the device" + (f"; {_fmt(ld['per_core_img_s_uint8_randaug'], '.0f')} img/s with RandAugment there "
                                  f"too" if "per_core_img_s_uint8_randaug" in ld else "") + ")"
                 if "per_core_img_s_uint8" in ld else "")
        out += ["", f"Per-core rate {_fmt(ld['per_core_img_s'], '.0f')} img/s{uint8}; cores needed to feed one GPU's "
                f"step at its measured rate: {need}.", ""]
    for k, v in r.get("skipped", {}).items():
        out.append(f"Section {k}: {v}")
    return "\n".join(out).rstrip() + "\n"


def render_docs(paths=None, docs: Path = DOCS) -> str:
    """docs/benchmarks.md with its generated GPU block rebuilt from the committed runs (reproduce/reference/gpu)."""
    paths = sorted(REFERENCE.glob("*.json")) if paths is None else paths
    body = "\n".join(render(json.loads(Path(p).read_text())) for p in paths) or "No GPU run committed yet.\n"
    text = docs.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{docs} needs exactly one {BEGIN!r} ... {END!r} block")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


def save(r: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(r, indent=1) + "\n"))


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Every GPU question in one run: the step against timm's task, the "
                                             "masked teachers' throughput, the input pipeline")
    ap.add_argument("--batch", type=flags.integer("[1, inf)"), help="step timing and check batch (default 256; --cpu-smoke 4)")
    ap.add_argument("--iters", type=flags.integer("[1, inf)"), help="timed interleaved rounds (default 30; --cpu-smoke 2)")
    ap.add_argument("--check-steps", type=flags.integer("[1, inf)"), help="steps of the compiled == eager check (default 20; smoke 3)")
    ap.add_argument("--peak-tflops", type=flags.number("(0, inf)"), help="the GPU's dense bf16 datasheet peak, overriding the table")
    ap.add_argument("--budget-s", type=flags.number("(0, inf)"), help="seconds for the whole run; later sections are skipped past it "
                                                   "(default 420; smoke 900)")
    ap.add_argument("--out", type=Path, default=Path("results/gpu_check.json"))
    ap.add_argument("--warm-cache", action="store_true",
                    help="keep the default inductor cache (then compile s may be warm; --cpu-smoke always does)")
    ap.add_argument("--cpu-smoke", action="store_true", help="run the whole path on CPU with tiny models")
    ap.add_argument("--render-docs", action="store_true",
                    help="rewrite docs/benchmarks.md's GPU block from reproduce/reference/gpu/*.json and exit")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    args.batch = args.batch or (4 if smoke else 256)
    args.iters = args.iters or (2 if smoke else 30)
    args.check_steps = args.check_steps or (3 if smoke else 20)
    args.budget_s = args.budget_s or (900.0 if smoke else 420.0)
    return args


def smoke_configs():
    s_cfg = mkd.ViTConfig(name="smoke_student_2x32", img_size=32, patch_size=8, num_classes=10, embed_dim=32,
                          depth=2, num_heads=2)
    t_cfg = s_cfg.replace(name="smoke_teacher_2x48", embed_dim=48, num_heads=3)
    cait = mkd.vit_config("cait_xxs24_224").replace(name="smoke_cait", img_size=32, patch_size=8, num_classes=10,
                                                    embed_dim=48, depth=1, num_heads=3, class_attn_depth=1)
    return s_cfg, t_cfg, {"DeiT-S": t_cfg, "CaiT-S24": cait}


def setup(args) -> tuple[torch.device, str, mkd.ViTConfig, mkd.ViTConfig, str]:
    """(device, precision, student config, teacher config, device name); exits 2 without a GPU unless smoke."""
    if args.cpu_smoke:
        s_cfg, t_cfg, _ = smoke_configs()
        return torch.device("cpu"), "bf16", s_cfg, t_cfg, "CPU smoke (no GPU)"
    if not torch.cuda.is_available():
        print(f"no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU; run this "
              f"on a CUDA machine, or `bash reproduce/gpu_check.sh --cpu-smoke` for the CPU path", file=sys.stderr)
        sys.exit(2)
    return (torch.device("cuda"), "auto", mkd.vit_config("deit_tiny_patch16_224"),
            mkd.vit_config("deit_small_patch16_224"), torch.cuda.get_device_name())


def sections(c: SimpleNamespace, r: dict, args) -> list[tuple[str, float, object]]:
    """The run as (name, seconds it needs left, fn -> entries of the JSON), in order, for bench.run_sections.
    [5] comes before [4]: the loader is short and answers its question whatever the budget leaves the teachers."""
    smoke, device = args.cpu_smoke, c.device

    def machine_section():
        n = 1024 if smoke else 8192
        gemm = gemm_tflops(device, n, 3 if smoke else 10)
        datasheet, source = peak_tflops(c.gpu if device.type == "cuda" else "", args.peak_tflops)
        c.peak = gemm if device.type == "cuda" else args.peak_tflops  # MFU against the rate this GPU showed
        m = {**machine(), "gpu": c.gpu, "gemm_n": n, "gemm_tflops": gemm, "datasheet_tflops": datasheet,
             "datasheet_source": source}
        print(f"[0] {c.gpu}: torch {m['torch']}, CUDA {m['cuda']}, timm {m['timm']}, Pillow {m['pillow']}, "
              f"{m['cores']} CPU cores; bf16 GEMM {n}^3: {gemm:.1f} TFLOP/s (datasheet {datasheet}, {source})")
        return {"machine": m}

    def precision_section():
        tp = teacher_precision(c.s_cfg, c.t_cfg, c.teacher, c.teacher_bf16, c.num_keep, c.x, device)
        print(f"[1] teacher logits, bf16 vs fp32 weights under autocast: max |diff| {tp['max_abs_logit_diff']:.2e} "
              f"(autocast vs fp32: {tp['autocast_max_abs_logit_diff']:.2e}; logit std {tp['logit_std']:.2f}), "
              f"top-1 agreement {100 * tp['top1_agreement']:.1f}%")
        return {"teacher_bf16": tp}

    def check_section():
        t0 = time.perf_counter()
        check, m = loss_check(c.s_cfg, c.t_cfg, c.teacher, c.num_keep, c.data, args.check_steps, c.precision, device)
        c.masked = {"call": lambda: m["step"](m["params"], m["opt"], c.x, c.y), "compile_s": m["compile_s"]}
        print(f"[2] compiled == eager, {check['steps']} MaskedKD steps ({time.perf_counter() - t0:.0f} s): loss "
              f"{check['losses_eager'][0]:.3f} -> {check['losses_eager'][-1]:.3f}, max |compiled - eager| "
              f"{check['max_abs_loss_diff']:.2e} (tolerance {check['tolerance']:.0e}), finite {check['finite']}, "
              f"teacher without grads {check['teacher_grads_none']}, unchanged {check['teacher_unchanged']}: "
              f"{'PASS' if check['passed'] else 'FAIL'}")
        return {"check": check}

    def step_section_():
        if c.masked is None:
            raise RuntimeError("not run: [2] failed")
        try:
            return {"step": step_section(c.s_cfg, c.t_cfg, c.teacher, c.teacher_bf16, c.num_keep, c.x, c.y, c.masked,
                                         c.precision, device, args.iters, c.clock, c.peak, smoke=smoke)}
        finally:  # the step's models and graphs leave before the loader and the teachers
            c.masked = c.teacher = c.teacher_bf16 = None
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def loader_section():
        rows = r.get("step", {}).get("rows", {})
        rates = {k: v["img_s"] for k, v in rows.items() if k in ("vanilla_kd", "maskedkd") and "img_s" in v}
        if smoke:
            return {"loader": bench_loader([1, 2], 8, 64, 32, 4, 1.0, device, rates, sizes=((40, 30), (30, 40)))}
        # the ImageNet recipe's batch per GPU (1024 over 8 GPUs) and its 10 workers; 16,384 files: no epoch end in 8 s
        return {"loader": bench_loader(sorted({1, 10, os.cpu_count() or 1}), 256, 16384, 224, 128, 8.0, device,
                                       rates)}

    if smoke:
        _, _, cfgs = smoke_configs()
        names, batches = list(cfgs), {k: 4 for k in cfgs}
    else:
        from reproduce.lib.paper import teacher_config
        names, cfgs, batches = list(TEACHERS), {k: teacher_config(k) for k in TEACHERS}, TEACHER_BATCH
    rows = teacher_rows(names, cfgs, batches)
    r["teachers"] = {"iters": max(3, args.iters // 3), "kept_pct": list(KEPT_PCT), "rows": list(rows.values())}

    def teacher_section(name, mode):
        def run():
            measure_teacher(rows, name, cfgs[name], batches[name], mode, r["teachers"]["iters"], device)
            return {"teachers": r["teachers"]}  # its rows, filled in place
        return run

    return [("[0] machine", 0, machine_section), ("[1] bf16 teacher", 0, precision_section),
            ("[2] compiled == eager", 0, check_section), ("[3] step", 0, step_section_),
            ("[5] loader", 60, loader_section),
            *((f"[4] {name} {mode}", 5 if smoke else 45, teacher_section(name, mode))
              for mode in ("eager", "compiled") for name in (names[:1] if smoke and mode == "compiled" else names))]


def main(argv=None) -> dict:
    args = parse(argv)
    if args.render_docs:
        DOCS.write_text(render_docs())
        print(f"rewrote the GPU block of {DOCS} from {len(list(REFERENCE.glob('*.json')))} run(s) in {REFERENCE}")
        return {"check": {"passed": True}, "teacher_bf16": {"top1_agreement": 1.0}}
    clock = Clock(args.budget_s)
    device, precision, s_cfg, t_cfg, gpu = setup(args)
    cold = not (args.warm_cache or args.cpu_smoke)
    if cold:  # a fresh inductor (and triton) cache: "compile s" is a cold compile
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpu_check_inductor_")
    teacher = {k: v.to(device) for k, v in mkd.init_params(t_cfg, seed=1).items()}
    data = synthetic_data(s_cfg, args.batch, device)
    # the training program's cast (precision.cast_matmul_weights: matmul weights bf16, norms, biases and embeddings
    # fp32), which autocast makes bit-identical to fp32 weights; casting every tensor would make the residual bf16
    c = SimpleNamespace(device=device, precision=precision, s_cfg=s_cfg, t_cfg=t_cfg, gpu=gpu, clock=clock, data=data,
                        num_keep=mkd.keep_count(s_cfg.num_patches, 0.5), teacher=teacher, masked=None, peak=None,
                        teacher_bf16=cast_matmul_weights(teacher))
    c.x, c.y = data(0)
    r = {"date": datetime.date.today().isoformat(), "student": s_cfg.name, "teacher": t_cfg.name,
         "num_keep": c.num_keep, "precision": precision, "cold_cache": cold, "budget_s": args.budget_s}
    run_sections(sections(c, r, args), r, clock, lambda: save(r, args.out))
    r["markdown"] = render(r)
    save(r, args.out)
    print(r["markdown"])
    print(f"wrote {args.out}")
    return r


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res.get("check", {}).get("passed") and res.get("teacher_bf16", {}).get("top1_agreement") == 1.0
             else 1)
