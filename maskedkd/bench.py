"""Benchmarks that print ratios measured side by side in one run (absolute CPU times are noise; ratios count).

    python -m maskedkd.bench step    [--student deit_tiny_patch16_224] [--teacher deit_small_patch16_224]
                                     [--num-keep 98] [--batch 8] [--iters 6] [--no-eager]
    python -m maskedkd.bench teacher [--model deit_small_patch16_224] [--num-keep 98] [--batch 8] [--iters 6]
    python -m maskedkd.bench loader  [--workers 1,2] [--seconds 5] [--img-size 224] [--batch 64]
    python -m maskedkd.bench colour-ops [--batch 64] [--size 224] [--iters 5]

`step`: ms/step of the MaskedKD step vs the vanilla-KD step (same models, batch, both compiled), their ratio
beside the FLOPs ledger's ratio (3 S + T_k) / (3 S + T_full), and eager vs compiled for the MaskedKD step.
`teacher`: teacher forward time unmasked vs masked, beside the MACs ratio (the paper's img/s column).
`loader`: images/s of the training program's ImageFolder path with DeiT's recipe on generated JPEGs, per path
(augmentation in the workers, or uint8 batches finished on the device) and worker count.
`colour-ops`: RandAugment's colour ops, timm's PIL op per image vs the batched tensor op.
Runs are interleaved (A B A B ...) and the median is reported, so drift hits both sides alike.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch

from .checks import flag_int_list, flag_integer, flag_number
from .config import vit_config
from .flops import macs, training_ledger
from .model import init_params, teacher_forward
from .optim import make_optimizer
from .precision import cast_matmul_weights
from .step import make_train_step
from .view import TeacherView


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, iters: int, device, warmup: bool = True) -> dict[str, float]:
    """Median seconds per call of each fn, measured round-robin after one warm-up call each (warmup=False: none,
    for calls whose first run is the one that counts). The one timer of every benchmark here."""
    if warmup:
        for f in fns.values():
            f()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(iters):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """The one description of the machine and versions every benchmark and results file records."""
    from .reproducible import cpu_info
    d = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
         platform.machine(), "threads": torch.get_num_threads(), "cpu_model": cpu_info()["name"] or
         platform.processor() or platform.machine(), "cores": os.cpu_count(), "os": f"{platform.system()} "
         f"{platform.release()}", **{k: _version(k) for k in ("numpy", "einops", "timm")},
         "pillow": _version("pillow"), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name()
    return d


class Clock:
    """Seconds since a run began, against its budget (none by default)."""

    def __init__(self, budget_s: float = math.inf):
        self.t0, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()


def run_sections(sections, out: dict, clock: Clock, save=lambda: None) -> dict:
    """The one budget loop of every sectioned benchmark: each (name, need_s, fn) in turn, out.update(fn()); when
    fewer than need_s seconds of the clock's budget are left, or fn raises, the reason goes to out["skipped"][name]
    instead (a traceback's tail: kept and printed, never hidden; an error whose message starts "not run:" as it is),
    and the later sections still run. After each: the time printed, out["wall_s"] set and save() called, so a run
    stopped from outside keeps what it measured."""
    skipped = out.setdefault("skipped", {})
    for name, need_s, fn in sections:
        left = clock.left()
        if left < need_s:
            skipped[name] = f"{left:.0f} s of the budget left"
        else:
            try:
                out.update(fn())
            except Exception as e:
                skipped[name] = str(e) if str(e).startswith("not run:") else "failed: " + traceback.format_exc()[-3000:]
                print(f"{name}: {skipped[name]}")
        out["wall_s"] = clock.elapsed()
        print(f"{name} done at {out['wall_s']:.0f} s", flush=True)
        save()
    return out


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


def teacher_rates(cfg, counts, batch: int, iters: int, device, compiled: bool = False, bf16: bool = False
                  ) -> tuple[dict, float]:
    """Median seconds per teacher forward (no grad, random weights) with each kept count of `counts` (None: every
    patch; random kept patches per sample), timed interleaved, and the seconds of their first calls. bf16: matmul
    weights cast (precision.cast_matmul_weights, as the training program holds a teacher) under bf16 autocast.
    compiled: one graph for every patch and one for every kept count (the kept count a dynamic dimension)."""
    params = {k: v.to(device) for k, v in init_params(cfg, seed=0).items()}
    params = cast_matmul_weights(params) if bf16 else params
    x = torch.randn(batch, cfg.in_chans, *cfg.img_size, device=device)
    scores = torch.rand(batch, cfg.num_patches, device=device, generator=torch.Generator(device).manual_seed(0))

    def forward(x, keep):
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return teacher_forward(params, x, cfg, keep, check=False)

    if compiled:
        torch._dynamo.reset()  # each teacher starts its own graphs
    fn = torch.compile(forward) if compiled else forward
    calls, first_s = {}, 0.0
    for k in counts:
        keep = None if k is None else scores.topk(k, dim=1).indices
        if compiled and keep is not None:
            torch._dynamo.mark_dynamic(keep, 1)
        calls[k] = lambda keep=keep: fn(x, keep)
        t = time.perf_counter()
        calls[k]()
        sync(device)
        first_s += time.perf_counter() - t
    return interleaved(calls, iters, device), first_s


def bench_teacher(model: str, num_keep: int, batch: int, iters: int, device, cfg=None) -> dict:
    """Teacher forward, unmasked vs num_keep patches (random weights, no grad, eager fp32)."""
    cfg = cfg or vit_config(model)
    t, _ = teacher_rates(cfg, (None, num_keep), batch, iters, device)
    return {"model": cfg.name, "num_keep": num_keep, "batch": batch, "ms_full": 1e3 * t[None],
            "ms_masked": 1e3 * t[num_keep], "speedup": t[None] / t[num_keep],
            "macs_speedup": macs(cfg) / macs(cfg, num_keep)}


def write_jpegs(root: Path, distinct: int, total: int, sizes, classes: int = 4, quality: int = 90) -> float:
    """root/{train,val}/cK/i.jpg: `distinct` JPEGs of smooth random content at the given (w, h) sizes, linked
    (symlinks) to `total` training files so that one epoch outlasts the measurement (as ImageNet's 1.28M do: no
    epoch boundary inside the timed window; a file read again comes from the page cache, as on a warm disk); one
    validation file per class. Returns the distinct files' mean size in KiB."""
    import numpy as np
    from PIL import Image
    g = np.random.default_rng(0)
    src = root / "distinct"
    src.mkdir(parents=True)
    kib = 0.0
    for i in range(distinct):
        w, h = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([np.sin(xx / (7 + 5 * k) + g.uniform(0, 6)) * np.cos(yy / (9 + 3 * k)) for k in range(3)], -1)
        arr = 127 + 80 * base + g.normal(0, 12, (h, w, 3))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(src / f"{i}.jpg", quality=quality)
        kib += (src / f"{i}.jpg").stat().st_size / 1024 / distinct
    for split, count in (("train", total), ("val", classes)):
        for i in range(count):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i}.jpg").symlink_to(src / f"{i % distinct}.jpg")
    return kib


LOADER_PATHS = ("pil", "uint8", "uint8-randaug")
JPEG_SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 500))  # ImageNet photos' usual sizes


def loader_rate(root: Path, img_size: int, batch: int, workers: int, seconds: float, device,
                path: str = "pil") -> dict:
    """Images/s of the training program's ImageFolder path (data.loaders.FolderData, DeiT's recipe, MixUp/CutMix
    on the device in to_device) within one epoch, for `seconds` after the first batch (worker start-up not counted)
    or to the epoch's end. path "pil": the workers normalise and erase; "uint8": uint8 from the workers,
    normalisation and erasing on the device (device_aug); "uint8-randaug": RandAugment there too (device_randaug)."""
    from .data.loaders import FolderData
    from .experiments import TrainConfig
    cfg = TrainConfig(data="imagefolder", data_path=str(root), img_size=img_size, batch_size=batch,
                      num_workers=workers, mixup=True, repeated_aug=3, seed=0, device_aug=path != "pil",
                      device_randaug=path == "uint8-randaug")
    data = FolderData(cfg)
    n, t0 = 0, None
    for x, y in data.train_batches(0):
        x, y = data.to_device(x, y, device)
        sync(device)
        if t0 is None:
            t0 = time.perf_counter()
            continue
        n += x.shape[0]
        if time.perf_counter() - t0 >= seconds:
            break
    sec = time.perf_counter() - t0
    del data
    return {"workers": workers, "path": path, "images": n, "seconds": sec, "img_s": n / sec}


def bench_loader(workers_list, distinct: int, total: int, img_size: int, batch: int, seconds: float, device,
                 step_img_s: dict[str, float] | None = None, sizes=JPEG_SIZES) -> dict:
    """The loader's rate on generated JPEGs per path (LOADER_PATHS) and worker count; a path that fails is its own
    row, the others still count. The per-core rate is the 1-worker rate (the main process only copies, mixes and,
    on the uint8 paths, finishes the recipe); cores needed = a step's img/s (step_img_s) over the pil path's."""
    with tempfile.TemporaryDirectory(prefix="maskedkd_jpegs_") as d:
        t0 = time.perf_counter()
        kib = write_jpegs(Path(d), distinct, total, sizes)
        gen_s = time.perf_counter() - t0
        runs = []
        for path in LOADER_PATHS:
            for w in workers_list:
                try:
                    runs.append(loader_rate(Path(d), img_size, batch, w, seconds, device, path))
                except Exception as e:  # kept in the row, never hidden
                    runs.append({"workers": w, "path": path, "images": 0, "seconds": 0.0, "img_s": None,
                                 "error": f"{type(e).__name__}: {str(e)[:300]}"})
    one = {p: next((r["img_s"] for r in runs if r["workers"] == 1 and r["path"] == p), None) for p in LOADER_PATHS}
    return {"distinct_images": distinct, "images": total, "sizes": [list(s) for s in sizes], "mean_kib": kib,
            "generate_s": gen_s, "img_size": img_size, "batch": batch, "cpu_count": os.cpu_count(), "runs": runs,
            "per_core_img_s": one["pil"], "per_core_img_s_uint8": one["uint8"],
            "per_core_img_s_uint8_randaug": one["uint8-randaug"],
            "cores_needed": {k: (v / one["pil"] if one["pil"] else None) for k, v in (step_img_s or {}).items()}}


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
    s.add_argument("--num-keep", type=flag_integer("[1, inf)"), default=98)
    s.add_argument("--batch", type=flag_integer("[1, inf)"), default=8)
    s.add_argument("--iters", type=flag_integer("[1, inf)"), default=6)
    s.add_argument("--no-eager", action="store_true")
    s.add_argument("--criterion", default="topk", type=_criterion,
                   help="also time the MaskedKD step with this criterion beside topk's (a registered name, or "
                        "module:name)")
    t = sub.add_parser("teacher")
    t.add_argument("--model", default="deit_small_patch16_224")
    t.add_argument("--num-keep", type=flag_integer("[1, inf)"), default=98)
    t.add_argument("--batch", type=flag_integer("[1, inf)"), default=8)
    t.add_argument("--iters", type=flag_integer("[1, inf)"), default=6)
    ld = sub.add_parser("loader")
    ld.add_argument("--workers", default=[1, 2], type=flag_int_list("[0, 64]"),
                    help="comma-separated DataLoader worker counts")
    ld.add_argument("--seconds", type=flag_number("(0, inf)"), default=5.0, help="timed seconds per path and worker count")
    ld.add_argument("--img-size", type=flag_integer("[16, 1024]"), default=224)
    ld.add_argument("--batch", type=flag_integer("[2, inf)"), default=64)
    ld.add_argument("--images", type=flag_integer("[1, 4096]"), default=64,
                    help="distinct generated JPEGs (linked to 4096 files)")
    c = sub.add_parser("colour-ops")
    c.add_argument("--batch", type=flag_integer("[1, inf)"), default=64)
    c.add_argument("--size", type=flag_integer("[16, 1024]"), default=224)
    c.add_argument("--iters", type=flag_integer("[1, inf)"), default=5)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.what == "loader":
        r = {**bench_loader(args.workers, args.images, 4096, args.img_size, args.batch, args.seconds, device),
             **machine()}
        print(f"DeiT's recipe on {r['distinct_images']} generated JPEGs to {r['img_size']} px, batch {r['batch']}, "
              f"{device}: img/s per path and DataLoader workers")
        for x in r["runs"]:
            print(f"  {x['path']:14s} {x['workers']:3d} workers  "
                  + (f"{x['img_s']:8.0f}" if x["img_s"] is not None else f"failed: {x['error']}"))
        print(json.dumps(r))
        return r
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
