"""Benchmarks that print ratios measured side by side in one run (absolute CPU times are noise; ratios count).

    python -m maskedkd.bench step    [--student deit_tiny_patch16_224] [--teacher deit_small_patch16_224]
                                     [--num-keep 98] [--batch 8] [--iters 6] [--no-eager]
    python -m maskedkd.bench teacher [--model deit_small_patch16_224] [--num-keep 98] [--batch 8] [--iters 6]

`step`: ms/step of the MaskedKD step vs the vanilla-KD step (same models, batch, both compiled), their ratio
beside the FLOPs ledger's ratio (3 S + T_k) / (3 S + T_full), and eager vs compiled for the MaskedKD step.
`teacher`: teacher forward time unmasked vs masked, beside the MACs ratio (the paper's img/s column).
Runs are interleaved (A B A B ...) and the median is reported, so drift hits both sides alike.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from .config import vit_config
from .flops import macs, training_ledger
from .model import init_params, teacher_forward
from .optim import make_optimizer
from .step import make_train_step
from .view import TeacherView


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, iters: int, device, warmup: bool = True) -> dict[str, float]:
    """Median seconds per call of each fn, measured round-robin after one warm-up call each (warmup=False: none,
    for calls whose first run is the one that counts). The one timer of every benchmark here."""
    if warmup:
        for f in fns.values():
            f()
    _sync(device)
    times = {k: [] for k in fns}
    for _ in range(iters):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def machine() -> dict:
    """The one description of the machine and versions every benchmark and results file records."""
    import einops
    import numpy
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                     "")
    except OSError:
        pass
    d = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
         platform.machine(), "threads": torch.get_num_threads(), "cpu_model": model or platform.processor() or
         platform.machine(), "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
         "numpy": numpy.__version__, "einops": einops.__version__}
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name()
    return d


def bench_step(student: str, teacher: str, num_keep: int, batch: int, iters: int, eager: bool, device,
               criterion: str = "topk") -> dict:
    """The compiled vanilla KD and MaskedKD steps side by side (random weights); criterion: another selection
    criterion timed beside topk's step, as a third compiled step (its cost in the step: criterion_over_topk)."""
    s_cfg, t_cfg = vit_config(student), vit_config(teacher)
    t_params = {k: v.to(device) for k, v in init_params(t_cfg, seed=1).items()}
    x = torch.randn(batch, 3, *s_cfg.img_size, device=device)
    y = torch.randint(0, s_cfg.num_classes, (batch,), device=device)

    def runner(keep, compile, crit="topk"):
        params = {k: v.to(device) for k, v in init_params(s_cfg, seed=0).items()}
        opt = make_optimizer(params, lr=1e-5)
        step = make_train_step(s_cfg, view=TeacherView(t_cfg, t_params, keep, criterion=crit), compile=compile,
                               drop_path=0.1)
        return lambda: step(params, opt, x, y)

    fns = {"vanilla_kd": runner(None, True), "maskedkd": runner(num_keep, True)}
    if criterion != "topk":
        fns["maskedkd_criterion"] = runner(num_keep, True, criterion)
    if eager:
        fns["maskedkd_eager"] = runner(num_keep, False)
    t = interleaved(fns, iters, device)
    led = training_ledger(s_cfg, t_cfg, num_keep)
    out = {"student": student, "teacher": teacher, "num_keep": num_keep, "batch": batch, "iters": iters,
           "device": str(device), **machine(),
           "ms_vanilla_kd": 1e3 * t["vanilla_kd"], "ms_maskedkd": 1e3 * t["maskedkd"],
           "measured_ratio": t["maskedkd"] / t["vanilla_kd"],
           "flops_ratio": led["total_masked"] / led["total_full"]}
    out["ratio_rel_error"] = out["measured_ratio"] / out["flops_ratio"] - 1
    if criterion != "topk":
        out.update(criterion=criterion, ms_maskedkd_criterion=1e3 * t["maskedkd_criterion"],
                   criterion_over_topk=t["maskedkd_criterion"] / t["maskedkd"])
    if eager:
        out["ms_maskedkd_eager"] = 1e3 * t["maskedkd_eager"]
        out["compile_speedup"] = t["maskedkd_eager"] / t["maskedkd"]
    return out


def bench_teacher(model: str, num_keep: int, batch: int, iters: int, device, cfg=None) -> dict:
    """Teacher forward, unmasked vs num_keep patches (random weights, no grad)."""
    cfg = cfg or vit_config(model)
    params = {k: v.to(device) for k, v in init_params(cfg, seed=0).items()}
    x = torch.randn(batch, cfg.in_chans, *cfg.img_size, device=device)
    keep = torch.stack([torch.randperm(cfg.num_patches, device=device)[:num_keep] for _ in range(batch)])

    def full():
        with torch.no_grad():
            teacher_forward(params, x, cfg, check=False)

    def masked():
        with torch.no_grad():
            teacher_forward(params, x, cfg, keep, check=False)

    t = interleaved({"full": full, "masked": masked}, iters, device)
    return {"model": cfg.name, "num_keep": num_keep, "batch": batch, "ms_full": 1e3 * t["full"],
            "ms_masked": 1e3 * t["masked"], "speedup": t["full"] / t["masked"],
            "macs_speedup": macs(cfg) / macs(cfg, num_keep)}


def bench_colour_ops(batch: int, size: int, iters: int, device) -> dict:
    """RandAugment's colour ops: timm's PIL op image by image (what a DataLoader worker runs) against the batched
    tensor op of maskedkd.data.device_ops on `device` (equal outputs: tests/test_device_ops.py), img/s side by side
    on the same random uint8 batch, each image at its own magnitude."""
    from PIL import Image
    from timm.data import auto_augment as aa

    from .data import device_ops as D
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
    imgs = [Image.fromarray(a) for a in x.permute(0, 2, 3, 1).numpy()]
    xd = x.to(device)
    factor = torch.rand(batch, generator=g) * 1.8 + 0.1
    bits, thresh = torch.randint(1, 9, (batch,), generator=g), torch.randint(0, 257, (batch,), generator=g)
    ops = {"invert": (aa.invert, D.invert, None), "posterize": (aa.posterize, D.posterize, bits),
           "solarize": (aa.solarize, D.solarize, thresh), "auto_contrast": (aa.auto_contrast, D.auto_contrast, None),
           "equalize": (aa.equalize, D.equalize, None), "brightness": (aa.brightness, D.brightness, factor),
           "color": (aa.color, D.color, factor), "contrast": (aa.contrast, D.contrast, factor),
           "sharpness": (aa.sharpness, D.sharpness, factor)}
    out = {}
    for name, (pil, ours, arg) in ops.items():
        a = None if arg is None else arg.tolist()
        t = interleaved({"pil": lambda: [pil(im, *([] if a is None else [v])) for im, v in zip(imgs, a or imgs)],
                         "tensor": (lambda: ours(xd)) if arg is None else (lambda: ours(xd, arg.to(device)))},
                        iters, device)
        out[name] = {"pil_img_s": batch / t["pil"], "tensor_img_s": batch / t["tensor"],
                     "ratio": t["pil"] / t["tensor"]}
    return {"batch": batch, "size": size, "device": str(device), **machine(), "ops": out}


def _criterion(name: str) -> str:
    """--criterion: a registered criterion (or a module:name plug-in, imported now), refused naming the value."""
    from .select import check_criterion
    try:
        check_criterion(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="maskedkd benchmarks (ratios measured side by side)")
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("step")
    s.add_argument("--student", default="deit_tiny_patch16_224")
    s.add_argument("--teacher", default="deit_small_patch16_224")
    s.add_argument("--num-keep", type=int, default=98)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--iters", type=int, default=6)
    s.add_argument("--no-eager", action="store_true")
    s.add_argument("--criterion", default="topk", type=_criterion,
                   help="also time the MaskedKD step with this criterion beside topk's (a registered name, or "
                        "module:name)")
    t = sub.add_parser("teacher")
    t.add_argument("--model", default="deit_small_patch16_224")
    t.add_argument("--num-keep", type=int, default=98)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--iters", type=int, default=6)
    c = sub.add_parser("colour-ops")
    c.add_argument("--batch", type=int, default=64)
    c.add_argument("--size", type=int, default=224)
    c.add_argument("--iters", type=int, default=5)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.what == "colour-ops":
        r = bench_colour_ops(args.batch, args.size, args.iters, device)
        print(f"RandAugment colour ops, batch {r['batch']} of {r['size']} px, {r['device']} ({r['threads']} threads):"
              f" timm's PIL op per image vs the batched tensor op (img/s)")
        for k, v in r["ops"].items():
            print(f"  {k:14s} PIL {v['pil_img_s']:9.0f}  tensor {v['tensor_img_s']:9.0f}  x{v['ratio']:.2f}")
        print(json.dumps(r))
        return r
    if args.what == "step":
        r = bench_step(args.student, args.teacher, args.num_keep, args.batch, args.iters, not args.no_eager, device,
                       args.criterion)
        print(f"{r['student']} student, {r['teacher']} teacher, {r['num_keep']} kept, batch {r['batch']}, "
              f"{r['device']} ({r['threads']} threads), torch {r['torch']}")
        print(f"  vanilla KD step  {r['ms_vanilla_kd']:9.1f} ms (compiled)")
        print(f"  MaskedKD step    {r['ms_maskedkd']:9.1f} ms (compiled)")
        print(f"  measured ratio   {r['measured_ratio']:.3f}   FLOPs ratio {r['flops_ratio']:.3f}   "
              f"relative error {100 * r['ratio_rel_error']:+.1f}%")
        if "criterion" in r:
            print(f"  MaskedKD step, {r['criterion']} {r['ms_maskedkd_criterion']:9.1f} ms (compiled): "
                  f"x{r['criterion_over_topk']:.3f} of topk's step")
        if "compile_speedup" in r:
            print(f"  MaskedKD eager   {r['ms_maskedkd_eager']:9.1f} ms -> compiled speed-up "
                  f"x{r['compile_speedup']:.2f}")
    else:
        r = bench_teacher(args.model, args.num_keep, args.batch, args.iters, device)
        print(f"{r['model']}: full {r['ms_full']:.1f} ms, {r['num_keep']} kept {r['ms_masked']:.1f} ms -> "
              f"x{r['speedup']:.2f} measured, x{r['macs_speedup']:.2f} by MACs")
    print(json.dumps(r))
    return r


if __name__ == "__main__":
    main()
