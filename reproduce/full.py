"""Table 1 at full scale: the paper's recipe on ImageNet-1k with real teacher checkpoints [digest 3].

    bash reproduce/table1.sh --full --data /path/to/imagenet --checkpoints /path/to/teachers \
        [--rows 2,3] [--dry-run] [--epochs 300]

`--data` holds train/ and val/ class folders. `--checkpoints` holds teacher files under either name below
(the official release .pth or timm's safetensors saved as `<timm name>.safetensors`). Rows whose teacher file is
missing are skipped and said so. Each row runs `torchrun --nproc_per_node=<visible GPUs> -m maskedkd.train ...`
(one process on CPU); the accuracy column is then filled from the runs' summaries into
results/table1_full.md. `--dry-run` prints every command and the estimated GPU-hours from the FLOPs ledger.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import maskedkd as mkd
from maskedkd import paper
from maskedkd.configs import MODELS, get_config
from maskedkd.harness import to_overrides
from maskedkd.select import keep_count

STUDENTS = {"DeiT-Ti": "deit_tiny_patch16_224", "DeiT-S": "deit_small_patch16_224", "DeiT-B": "deit_base_patch16_224"}
TEACHER_FILES = {  # [digest 3.4]
    "DeiT-S": ("deit_small_patch16_224-cd65a155.pth", "deit_small_patch16_224.fb_in1k.safetensors"),
    "DeiT-B": ("deit_base_patch16_224-b5f2ef4d.pth", "deit_base_patch16_224.fb_in1k.safetensors"),
    "DeiT3-S": ("deit_3_small_224_1k.pth", "deit3_small_patch16_224.fb_in1k.safetensors"),
    "DeiT3-B": ("deit_3_base_224_1k.pth", "deit3_base_patch16_224.fb_in1k.safetensors"),
    "DeiT3-L": ("deit_3_large_224_1k.pth", "deit3_large_patch16_224.fb_in1k.safetensors"),
}
ASSUMED_TFLOPS = 125.0  # sustained bf16 TFLOP/s per GPU assumed for the estimate (~40% of an A100's peak)


@dataclass
class FullRow:
    index: int
    row: paper.Row
    base: str  # the method a +MaskedKD row is plugged into
    why_not: str = ""


def plan_rows() -> list[FullRow]:
    out, base = [], ""
    for i, r in enumerate(paper.TABLE1):
        if r.method != "+MaskedKD":
            base = r.method
        fr = FullRow(i + 1, r, base)
        if r.student not in STUDENTS:
            fr.why_not = f"student {r.student} (MAE-pretrained or distillation-token) not set up here"
        elif base in ("Manifold", "Attention", "G2SD"):
            fr.why_not = f"{base} distillation not implemented yet"
        elif r.teacher is not None and r.teacher not in TEACHER_FILES:
            fr.why_not = f"teacher {r.teacher} not supported (CaiT: no architecture; CLIP: no loader)"
        out.append(fr)
    return out


def train_config(fr: FullRow, data: str, teacher_path: str | None, epochs: int, out_root: Path):
    r = fr.row
    c = get_config("deit_tiny_nokd").replace(name=f"table1_row{fr.index}", model=STUDENTS[r.student],
                                             data_path=data, epochs=epochs, out_dir=str(out_root / f"row{fr.index}"))
    if r.teacher is not None:
        t = paper.teacher_config(r.teacher)
        c = c.replace(teacher=teacher_path or "", teacher_model=t.name,
                      num_keep=keep_count(t.num_patches, r.kept / 100) if r.kept else 0)
    return c


def gpu_hours(fr: FullRow, epochs: int) -> float:
    r = fr.row
    s = mkd.macs(mkd.vit_config(STUDENTS[r.student]))
    t = 0 if r.teacher is None else paper.teacher_macs(r.teacher, r.kept)
    flops = 2 * (3 * s + t) * mkd.IMAGENET_TRAIN_IMAGES * epochs
    return flops / (ASSUMED_TFLOPS * 1e12) / 3600


def find_teacher(ckpt_dir: Path, teacher: str) -> Path | None:
    return next((ckpt_dir / n for n in TEACHER_FILES[teacher] if (ckpt_dir / n).is_file()), None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("--rows", default="", help="comma-separated table-1 row numbers (default: all runnable)")
    ap.add_argument("--epochs", type=int, default=0, help="override the paper's epochs (300; 50 for MAE rows)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", default="results")
    ap.add_argument("--tiny", action="store_true", help="(tests) tiny models, one step, in-process")
    args = ap.parse_args(argv)
    rows = plan_rows()
    wanted = {int(x) for x in args.rows.split(",") if x}
    out_root = Path(args.out) / "full"
    ngpu = torch.cuda.device_count()
    launcher = ([str(Path(sys.executable).parent / "torchrun"), f"--nproc_per_node={ngpu}", "-m", "maskedkd.train"]
                if ngpu else [sys.executable, "-m", "maskedkd.train"])
    results, total_h = [], 0.0
    for fr in rows:
        if wanted and fr.index not in wanted:
            continue
        r = fr.row
        epochs = args.epochs or r.epochs
        status = fr.why_not
        path = None
        if not status and r.teacher is not None:
            path = find_teacher(Path(args.checkpoints), r.teacher)
            if path is None:
                status = f"teacher file missing: one of {TEACHER_FILES[r.teacher]} in {args.checkpoints}"
        if status:
            print(f"row {fr.index:2d} {r.student} / {r.teacher} / {r.label}: skipped ({status})")
            results.append((fr, None, status))
            continue
        cfg = train_config(fr, args.data, str(path) if path else None, epochs, out_root)
        h = gpu_hours(fr, epochs)
        total_h += h
        cmd = launcher + ["deit_tiny_nokd", *to_overrides(cfg, "deit_tiny_nokd")]
        print(f"row {fr.index:2d} {r.student} / {r.teacher} / {r.label}: ~{h:.0f} GPU-h\n  {' '.join(cmd)}")
        if args.dry_run:
            continue
        if args.tiny:
            from maskedkd.train import run
            summary = run(tiny(cfg))
        else:
            subprocess.run(cmd, check=True)
            summary = json.loads((Path(cfg.out_dir) / "summary.json").read_text())
        results.append((fr, summary, ""))
    print(f"estimated total: {total_h:.0f} GPU-hours at {ASSUMED_TFLOPS:.0f} TFLOP/s sustained per GPU")
    if args.dry_run:
        return results
    lines = ["# Table 1 at full scale (ImageNet-1k)", "", "| row | student | teacher | method | paper acc | ours | note |",
             "|---|---|---|---|---|---|---|"]
    for fr, s, note in results:
        ours = f"{100 * s['final_acc']:.1f}" if s and s.get("final_acc") is not None else "–"
        lines.append(f"| {fr.index} | {fr.row.student} | {fr.row.teacher or '–'} | {fr.row.label} | {fr.row.acc} | "
                     f"{ours} | {note} |")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table1_full.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


def tiny(cfg):
    """(tests) The same run shrunk: 32x32 inputs, 1-block models, batch 4, one step."""
    for name in (cfg.model, cfg.teacher_model):
        if name and name not in MODELS:
            MODELS[name] = mkd.vit_config(name, img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    return cfg.replace(img_size=32, batch_size=4, max_steps=1, epochs=1, num_workers=0, compile=False,
                       num_keep=min(cfg.num_keep, 8), repeated_aug=1)
