"""Dress rehearsal of the full-scale path at real model size, on a CPU (the full-scale path before a GPU runs it).

    bash reproduce/rehearsal.sh [--out results/rehearsal] [--nproc 2] [--keep]

What a researcher runs on ImageNet, made small only in data and steps: a DeiT-Ti student distilled with MaskedKD
50% (98 of 196 patches) from a DeiT-S teacher at 224 px, the teacher loaded from a file that timm wrote
(`torch.save(timm.create_model("deit_small_patch16_224", pretrained=False).state_dict())`), an ImageFolder of
generated JPEG files (3 classes, varied sizes, train and val), the registered ImageNet config
`deit_tiny_deit_small_maskedkd50` with DeiT's recipe (timm RandAugment, MixUp/CutMix, repeated augmentation,
2 DataLoader workers), under `torchrun --nproc-per-node 2` with gloo, bf16 autocast on the CPU through the code
path CUDA uses (precision=bf16), an evaluation each epoch and a checkpoint each step.
Three launches: A trains 2 epochs (4 steps) straight; B stops after step 3 (mid-epoch); B resumes and finishes.
It checks that the resumed loss curve continues A's exactly and the final weights are bit-identical, and prints
the wall time of each launch. Expected: "rehearsal: PASS" in about 1-3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reproduce.lib import flags

CONFIG = "deit_tiny_deit_small_maskedkd50"


def make_folder(root: Path, classes: int = 3, n_train: int = 6, n_val: int = 2) -> None:
    """root/{train,val}/classK/i.jpg: JPEGs of varied sizes (smooth colour fields plus noise, class-dependent)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = int(rng.integers(160, 320)), int(rng.integers(160, 320))
                yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
                base = np.stack([np.sin((c + 1) * 3 * xx), np.cos((c + 2) * 2 * yy), xx * yy], -1)
                img = (127 + 100 * base + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.jpg", quality=90)


def write_timm_teacher(path: Path, num_classes: int) -> None:
    """A DeiT-S teacher file exactly as timm writes one (random weights: nothing is downloaded)."""
    import timm
    model = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=num_classes)
    torch.save(model.state_dict(), path)


def launch(out: Path, data: Path, teacher: Path, nproc: int, *extra: str) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "maskedkd.train", CONFIG, f"data_path={data}", f"teacher={teacher}", f"out_dir={out}",
           "batch_size=8", "epochs=2", "warmup_epochs=1", "num_workers=2", "precision=bf16", "compile=false",
           "threads=1", "log_every=1", "ckpt_every=1", *extra]
    print(" ".join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    t = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"launch failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.time() - t


def steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if '"step"' in line]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/rehearsal")
    ap.add_argument("--nproc", type=flags.integer("[1, inf)"), default=2)
    ap.add_argument("--keep", action="store_true", help="keep an existing --out folder's data and teacher")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    data, teacher = out / "data", out / "deit_small_timm.pth"
    if not data.is_dir():
        make_folder(data)
    if not teacher.is_file():
        write_timm_teacher(teacher, num_classes=3)
    a, b = out / "a", out / "b"
    for run_dir in (a, b):  # --keep keeps the data and the teacher; the runs always start over
        shutil.rmtree(run_dir, ignore_errors=True)
    t_a = launch(a, data, teacher, args.nproc)
    t_b1 = launch(b, data, teacher, args.nproc, "max_steps=3")
    first = steps(b)
    t_b2 = launch(b, data, teacher, args.nproc, "resume=true")
    from safetensors.torch import load_file
    log_a, log_b = steps(a), steps(b)
    pa, pb = load_file(str(a / "params.safetensors")), load_file(str(b / "params.safetensors"))
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    checks = {
        "steps": [r["step"] for r in log_b] == [1, 2, 3, 4] == [r["step"] for r in log_a],
        "interrupted_at_3": [r["step"] for r in first] == [1, 2, 3],
        "loss_curve_continues": [r["loss"] for r in log_a] == [r["loss"] for r in log_b],
        "weights_bit_identical": all(torch.equal(pa[k], pb[k]) for k in pa),
        "evaluated": len(sa["history"]) == 2 and sa["history"] == sb["history"],
        "masked_teacher": sa["num_keep"] == 98 and all(r["kept_tokens"] == 98.0 for r in log_a),
        "world_2": sa["world_size"] == args.nproc,
        "finite": all(np.isfinite(r["loss"]) for r in log_a),
    }
    report = {"checks": checks, "pass": all(checks.values()), "wall_s": {"a": round(t_a, 1), "b_until_3": round(t_b1, 1),
              "b_resume": round(t_b2, 1)}, "losses": [r["loss"] for r in log_a], "history": sa["history"]}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print("rehearsal:", "PASS" if report["pass"] else "FAIL " + str([k for k, v in checks.items() if not v]))
    if not report["pass"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    main()
