"""Table 1 at full scale: the paper's recipe on ImageNet-1k with real teacher checkpoints [docs/paper.md#recipe].

    bash reproduce/table1.sh --full --data /path/to/imagenet --checkpoints /path/to/teachers \
        [--rows 2,3] [--dry-run] [--epochs 300]
    bash reproduce/table1.sh --full --data /path/to/imagenet --hub [--rows 2,3]   # teachers by their timm tags

`--data` holds train/ and val/ class folders. `--checkpoints` holds teacher files under either name below
(the official release .pth or timm's safetensors saved as `<timm name>.safetensors`), and the starting files of the
students that fine-tune one (STUDENT_FILES: MAE's pre-trained ViT-L/H, G2SD's generic-distillation DeiT-S). With
`--hub`, a teacher without a file there is named by its timm tag (`timm:NAME.TAG`, maskedkd.hub), which timm downloads
into its own cache once. Rows whose teacher or student file is missing are skipped and said so. Each row runs `torchrun --nproc_per_node=<visible
GPUs> -m maskedkd.train ...`
(one process on CPU); the accuracy column is then filled from the runs' summaries into
results/table1_full.md. `--dry-run` prints every command and the estimated GPU-hours from the FLOPs ledger.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

import maskedkd as mkd
from reproduce.lib import paper
from maskedkd.experiments import MODELS, get_config
from maskedkd.experiments import write_config
from maskedkd.teachers import run_macs
from maskedkd.select import keep_count

STUDENTS = {"DeiT-Ti": "deit_tiny_patch16_224", "DeiT-S": "deit_small_patch16_224", "DeiT-B": "deit_base_patch16_224",
            "DeiT-S (dist. token)": "deit_small_distilled_patch16_224",  # G2SD's student (rows 34, 35)
            "MAE-ViT-L": "mae_vit_large_patch16", "MAE-ViT-H": "mae_vit_huge_patch14"}  # MAE fine-tuning (rows 36-46)
# The registered config whose recipe a student's rows use (maskedkd/experiments/imagenet.py); others: DeiT's.
STUDENT_RECIPES = {"DeiT-S (dist. token)": "g2sd_deit_small_mae_vit_base", "MAE-ViT-L": "mae_vit_large_nokd",
                   "MAE-ViT-H": "mae_vit_huge_nokd"}
# Students that start from a file (TrainConfig.init), looked up in --checkpoints beside the teachers: MAE's released
# pre-trained encoders (MAE README) or timm's `.mae` tags saved as safetensors; G2SD's generic-distillation student
# (G2SD's SD.sh --finetune; released on G2SD's Google Drive without a fixed name: ours is our choice).
STUDENT_FILES = {
    "MAE-ViT-L": ("mae_pretrain_vit_large.pth", "vit_large_patch16_224.mae.safetensors"),
    "MAE-ViT-H": ("mae_pretrain_vit_huge.pth", "vit_huge_patch14_224.mae.safetensors"),
    "DeiT-S (dist. token)": ("g2sd_generic_vit_small.pth",),
}
TEACHER_FILES = {  # [docs/paper.md#teachers]
    "DeiT-S": ("deit_small_patch16_224-cd65a155.pth", "deit_small_patch16_224.fb_in1k.safetensors"),
    "DeiT-B": ("deit_base_patch16_224-b5f2ef4d.pth", "deit_base_patch16_224.fb_in1k.safetensors"),
    "DeiT3-S": ("deit_3_small_224_1k.pth", "deit3_small_patch16_224.fb_in1k.safetensors"),
    "DeiT3-B": ("deit_3_base_224_1k.pth", "deit3_base_patch16_224.fb_in1k.safetensors"),
    "DeiT3-L": ("deit_3_large_224_1k.pth", "deit3_large_patch16_224.fb_in1k.safetensors"),
    # CaiT-S24: the official code loads a local ./S24_224.pth (DeiT repo's release); timm's tag is fb_dist_in1k
    "CaiT-S24": ("S24_224.pth", "cait_s24_224.fb_dist_in1k.safetensors"),
    # CLIP-B/16: which ImageNet fine-tune the paper used is [UNKNOWN] (docs/paper.md#teachers); timm's two in1k
    # fine-tunes
    "CLIP-B/16": ("vit_base_patch16_clip_224.openai_ft_in1k.safetensors",
                  "vit_base_patch16_clip_224.laion2b_ft_in1k.safetensors"),
    # G2SD's teacher: MAE's fine-tuned ViT-B (MAE FINETUNE.md, 83.664; G2SD SD.sh --teacher_path); no timm tag
    "MAE-ViT-B": ("mae_finetuned_vit_base.pth",),
    "DeiT3-H-1k": ("deit_3_huge_224_1k.pth", "deit3_huge_patch14_224.fb_in1k.safetensors"),
    "DeiT3-H-21k": ("deit_3_huge_224_21k_v1.pth", "deit3_huge_patch14_224.fb_in22k_ft_in1k.safetensors"),
}
FEATURE_KD = {"Manifold": "manifold", "Attention": "attention"}  # table-1 method -> TrainConfig.kd_kind
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
            fr.why_not = f"student {r.student} not set up here"
        elif r.teacher is not None and r.teacher not in TEACHER_FILES:
            fr.why_not = f"teacher {r.teacher} has no checkpoint file names here"
        out.append(fr)
    return out


def train_config(fr: FullRow, data: str, teacher_path: str | None, epochs: int, out_root: Path,
                 init: str | None = None):
    """A row's run: its student's recipe (STUDENT_RECIPES, else DeiT's), teacher file and kept count; `init` the
    student's starting file (STUDENT_FILES)."""
    r = fr.row
    c = get_config(STUDENT_RECIPES.get(r.student, "deit_tiny_nokd")).replace(
        name=f"table1_row{fr.index}", model=STUDENTS[r.student], data_path=data, epochs=epochs,
        out_dir=str(out_root / f"row{fr.index}"), init=init or "", teacher_model="")
    if r.teacher is not None:
        t = paper.teacher_config(r.teacher)
        c = c.replace(teacher=teacher_path or "", teacher_model=t.name,
                      num_keep=keep_count(t.num_patches, r.kept / 100) if r.kept else 0)
        if fr.base in FEATURE_KD:
            c = c.replace(kd_kind=FEATURE_KD[fr.base])
    return c


IMAGENET_VAL_IMAGES = 50_000  # ImageNet-1k validation set


def gpu_hours(cfg, *, parts: bool = False):
    """GPU-hours of one run at ASSUMED_TFLOPS, from its MACs per image (maskedkd.teachers.run_macs): training over ImageNet-1k
    train for cfg.epochs, plus evaluation over the validation set (the student's forward every eval_every epochs
    and after the last; with eval_masked_teacher, the teacher on its view every eval_teacher_every evaluations'
    epochs). parts=True returns (train, eval) hours."""
    m = run_macs(cfg)
    train = 2 * sum(m.values()) * mkd.IMAGENET_TRAIN_IMAGES * cfg.epochs
    epochs = range(1, cfg.epochs + 1)
    evals = [e for e in epochs if e % cfg.eval_every == 0 or e == cfg.epochs]
    t_evals = [e for e in evals if cfg.eval_masked_teacher and cfg.teacher and
               (e % cfg.eval_teacher_every == 0 or e == cfg.epochs)]
    evaluation = 2 * IMAGENET_VAL_IMAGES * (m["student"] / 3 * len(evals) + (m["teacher"] + m["scorer"]) * len(t_evals))
    train_h, eval_h = (f / (ASSUMED_TFLOPS * 1e12) / 3600 for f in (train, evaluation))
    return (train_h, eval_h) if parts else train_h + eval_h


def find_teacher(ckpt_dir: Path, teacher: str) -> Path | None:
    return next((ckpt_dir / n for n in TEACHER_FILES[teacher] if (ckpt_dir / n).is_file()), None)


def hub_tag(teacher: str) -> str | None:
    """The teacher's timm pretrained tag, read off its timm file name in TEACHER_FILES (NAME.TAG.safetensors), as a
    hub name for the training program (timm:NAME.TAG); None where timm has no such tag."""
    tags = [n[:-len(".safetensors")] for n in TEACHER_FILES[teacher] if n.endswith(".safetensors")]
    return f"timm:{tags[0]}" if tags else None


def locate_teacher(checkpoints: str, teacher: str | None, why_not: str = "", hub: bool = False
                   ) -> tuple[str | None, str]:
    """(the teacher as the run names it: a file in `checkpoints`, else with `hub` its timm tag; "") for a run that
    can go ahead, or (None, why it is skipped)."""
    if why_not or teacher is None:
        return None, why_not
    path = find_teacher(Path(checkpoints), teacher) if checkpoints else None
    if path:
        return str(path), ""
    if hub and hub_tag(teacher):
        return hub_tag(teacher), ""
    return None, (f"teacher file missing: one of {TEACHER_FILES[teacher]} in {checkpoints or '(no --checkpoints)'}"
                  + ("" if hub else "; --hub names it by its timm tag where it has one"))


def locate_student(checkpoints: str, student: str) -> tuple[Path | None, str]:
    """(the student's starting file or None, "") or (None, why the row is skipped): STUDENT_FILES students need one."""
    if student not in STUDENT_FILES:
        return None, ""
    path = next((Path(checkpoints) / n for n in STUDENT_FILES[student] if checkpoints and (Path(checkpoints) / n).is_file()),
                None)
    return (path, "") if path else (None, f"student file missing: one of {STUDENT_FILES[student]} in "
                                          f"{checkpoints or '(no --checkpoints)'}")


def launcher() -> list[str]:
    """torchrun over the visible GPUs, or one plain process without any."""
    ngpu = torch.cuda.device_count()
    return ([str(Path(sys.executable).parent / "torchrun"), f"--nproc_per_node={ngpu}", "-m", "maskedkd.train"]
            if ngpu else [sys.executable, "-m", "maskedkd.train"])


def launch(cfg, args, what: str) -> tuple[dict | None, float]:
    """Write one run's config to out_dir/launch.json (a dry run too: the printed command runs it), print the command
    and the estimated GPU-hours; run it unless --dry-run (in-process and shrunk with --tiny, for the tests); returns
    its summary (None on a dry run) and the GPU-hours."""
    if (Path(cfg.out_dir) / "checkpoint.pt").is_file():  # a run stopped part-way: continue it
        cfg = cfg.replace(resume=True)
    if args.tiny:
        cfg = tiny(cfg)
    cmd = launcher() + [str(write_config(cfg, Path(cfg.out_dir) / "launch.json"))]
    shown = " ".join(f"{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)  # for the reader only
                     if f.name not in ("name", "out_dir", "data_path") and getattr(cfg, f.name) != f.default)
    train_h, eval_h = gpu_hours(cfg, parts=True)
    hours = train_h + eval_h
    print(f"{what}: ~{hours:.0f} GPU-h (evaluation {eval_h:.1f})\n  {' '.join(cmd)}\n  ({shown})")
    if args.dry_run:
        return None, hours
    if args.tiny:
        from maskedkd.train import run
        return run(cfg), hours
    subprocess.run(cmd, check=True)
    return json.loads((Path(cfg.out_dir) / "summary.json").read_text()), hours


def full_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", required=True, help="ImageNet-1k root with train/ and val/ class folders")
    ap.add_argument("--checkpoints", default="", help="folder of teacher files (names: TEACHER_FILES) and of the "
                                                      "students' starting files (STUDENT_FILES)")
    ap.add_argument("--hub", action="store_true", help="a teacher without a file in --checkpoints is named by its "
                                                       "timm tag (timm:NAME), which timm downloads into its cache once")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and GPU-hours, run nothing")
    ap.add_argument("--out", default="results")
    ap.add_argument("--tiny", action="store_true", help="(tests) tiny models, one step, in-process")
    return ap


def launch_all(items, args) -> list[tuple[object, dict | None, str]]:
    """items: (key, label, config or None, skip note). Each runnable item is launched (launch), each skipped one said
    so; the GPU-hour total is printed. Returns (key, summary or None, note) per item, in order."""
    results, total_h = [], 0.0
    for key, label, cfg, note in items:
        if note:
            print(f"{label}: skipped ({note})")
            results.append((key, None, note))
            continue
        summary, hours = launch(cfg, args, label)
        total_h += hours
        results.append((key, summary, ""))
    print(f"estimated total: {total_h:.0f} GPU-hours at {ASSUMED_TFLOPS:.0f} TFLOP/s sustained per GPU")
    return results


def write_table(args, filename: str, lines: list[str]) -> None:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / filename).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    ap = full_parser(__doc__)
    ap.add_argument("--epochs", type=int, default=0, help="override the paper's epochs (300; 50 for MAE rows)")
    ap.add_argument("--rows", default="", help="comma-separated table-1 row numbers (default: all runnable)")
    args = ap.parse_args(argv)
    wanted = {int(x) for x in args.rows.split(",") if x}

    def items():
        for fr in plan_rows():
            if wanted and fr.index not in wanted:
                continue
            r = fr.row
            path, note = locate_teacher(args.checkpoints, r.teacher, fr.why_not, args.hub)
            init, s_note = (None, "") if note else locate_student(args.checkpoints, r.student)
            cfg = None if note or s_note else train_config(
                fr, args.data, str(path) if path else None, args.epochs or r.epochs, Path(args.out) / "full",
                str(init) if init else None)
            yield fr, f"row {fr.index:2d} {r.student} / {r.teacher} / {r.label}", cfg, note or s_note

    results = launch_all(items(), args)
    if args.dry_run:
        return results
    lines = ["# Table 1 at full scale (ImageNet-1k)", "", "| row | student | teacher | method | paper acc | ours | note |",
             "|---|---|---|---|---|---|---|"]
    for fr, s, note in results:
        ours = f"{100 * s['final_acc']:.1f}" if s and s.get("final_acc") is not None else "–"
        lines.append(f"| {fr.index} | {fr.row.student} | {fr.row.teacher or '–'} | {fr.row.label} | {fr.row.acc} | "
                     f"{ours} | {note} |")
    write_table(args, "table1_full.md", lines)
    return results


@dataclass
class Run:
    """One full-scale run of an analysis (criteria, ablations, beyond): what it is called, the student and teacher
    (keys of STUDENTS / TEACHER_FILES; teacher None: no distillation), the TrainConfig fields that make it what it
    is, and the paper's number for it as text."""
    label: str
    student: str
    teacher: str | None
    fields: dict = field(default_factory=dict)
    paper: str = "–"
    why_not: str = ""


def analysis(name: str, title: str, make_runs, argv, add_options=None) -> list[tuple[Run, dict | None, str]]:
    """Run an analysis at ImageNet scale (one process per run, torchrun over the visible GPUs) and write
    results/NAME_full.md: student accuracy and the masked teacher's, beside the paper's numbers.
    make_runs(args) -> [Run]; add_options(parser) adds the analysis' own options."""
    ap = full_parser(title)
    ap.add_argument("--epochs", type=int, default=300, help="epochs of every run (the paper's: 300)")
    if add_options:
        add_options(ap)
    args = ap.parse_args(argv)

    def items():
        for i, r in enumerate(make_runs(args)):
            path, note = locate_teacher(args.checkpoints, r.teacher, r.why_not, args.hub)
            cfg = None
            if not note:
                cfg = get_config("deit_tiny_nokd").replace(
                    name=f"{name}_{i}", model=STUDENTS[r.student], data_path=args.data, epochs=args.epochs,
                    out_dir=str(Path(args.out) / "full" / name / f"{i:02d}"))
                if r.teacher is not None:
                    cfg = cfg.replace(teacher=str(path), teacher_model=paper.teacher_config(r.teacher).name)
                cfg = cfg.replace(**r.fields)
            yield r, f"{r.label} ({r.student} <- {r.teacher or 'no teacher'})" if not note else r.label, cfg, note

    results = launch_all(items(), args)
    if args.dry_run:
        return results
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"# {title} at full scale (ImageNet-1k)", "",
             "| run | student | teacher | paper | student acc (%) | masked teacher acc (%) | note |",
             "|---|---|---|---|---|---|---|"]
    for r, s, note in results:
        t_acc = s["history"][-1].get("teacher_acc_masked") if s and s.get("history") else None
        lines.append(f"| {r.label} | {r.student} | {r.teacher or '–'} | {r.paper} | "
                     f"{pct(s and s.get('final_acc'))} | {pct(t_acc)} | {note} |")
    write_table(args, f"{name}_full.md", lines)
    return results


def tiny(cfg):
    """(tests) The same run shrunk: 32x32 inputs (16 patches), 1-block models, batch 4, one step (a keep schedule:
    two epochs, so that it changes once); kept / merged counts capped to fit 16 patches."""
    for name in (cfg.model, cfg.teacher_model, cfg.scorer_model):
        if name and name not in MODELS:
            MODELS[name] = mkd.vit_config(name, img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    return cfg.replace(img_size=32, batch_size=4, max_steps=0 if cfg.keep_schedule else 1,
                       epochs=2 if cfg.keep_schedule else 1, num_workers=0, compile=False, repeated_aug=1,
                       num_keep=min(cfg.num_keep, 8), student_keep=min(cfg.student_keep, 8),
                       teacher_tome_r=min(cfg.teacher_tome_r, 2))
