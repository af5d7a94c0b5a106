"""The embedded-scale runs shared by table 1, figure 2 and the analyses: one run per (seed, kept patches), named
by what it is, so every script that needs the same run finds it finished in results/runs/."""
from __future__ import annotations

import argparse

from maskedkd.experiments import MODELS, TrainConfig, get_config


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every embedded-scale script shares."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, fewer epochs: a first look")
    ap.add_argument("--smoke", action="store_true", help="tiny runs, for the test suite")
    ap.add_argument("--fresh", action="store_true", help="rerun instead of reusing finished runs")
    ap.add_argument("--jobs", type=int, default=2, help="parallel runs, one thread each")
    ap.add_argument("--out", default="results")
    return ap


def parse_or_full(ap: argparse.ArgumentParser, argv, full_main):
    """The embedded options, or with --full the ImageNet-scale mode: the remaining arguments (--data,
    --checkpoints, --dry-run, ...; see reproduce/lib/full.py) go to full_main, and None is returned."""
    ap.add_argument("--full", action="store_true", help="ImageNet scale with real checkpoints (reproduce/lib/full.py)")
    args, rest = ap.parse_known_args(argv)
    if args.full:
        full_main(rest)
        return None
    if rest:
        ap.error(f"unrecognised arguments: {rest}")
    return args


def mode_of(args) -> str:
    return "smoke" if args.smoke else "quick" if args.quick else "default"


def plan(mode: str, task: str = "digits") -> tuple[list[int], dict]:
    """Seeds and student-run settings for the default / quick / smoke modes."""
    if task == "sounds":
        return {"smoke": ([0], dict(epochs=1, train_size=128, test_size=64, batch_size=32)),
                "quick": ([0], dict(epochs=6)), "default": ([0, 1, 2], dict(epochs=10))}[mode]
    if mode == "smoke":
        return [0], dict(epochs=1, train_size=256, test_size=200, batch_size=32)
    if mode == "quick":  # a first look: 1 seed, 4 of the 12 epochs (1 clean + 3 cluttered)
        return [0], dict(epochs=4)
    # the student config's own recipe (experiments/digits.py); 5 seeds so that the paired differences of
    # reproduce/lib/claims.py have 4 degrees of freedom (seeds 0-2 were the earlier 3-seed runs: same names, reused)
    return [0, 1, 2, 3, 4], {}


def teacher_config(mode: str, task: str = "digits") -> TrainConfig:
    return get_config(f"{task}_teacher_smoke" if mode == "smoke" else f"{task}_teacher")


def student_run(mode: str, seed: int, num_keep: int | None, *, teacher: bool = True, criterion: str = "topk",
                scorer: str = "student", task: str = "digits", **extra) -> TrainConfig:
    """A student run: no KD (teacher=False), logit KD (num_keep None, or every patch) or MaskedKD with num_keep
    patches; `extra` sets other TrainConfig fields (kd_kind, keep_schedule, adaptive_mass, teacher_tome_r,
    student_keep). Named by run_name."""
    _, kw = plan(mode, task)
    c = get_config(f"{task}_student_nokd").replace(seed=seed, **kw, **extra)
    if teacher:
        t = teacher_config(mode, task)
        full = num_keep is None or num_keep == MODELS[t.model].num_patches
        masked = not (full or extra.get("teacher_tome_r") or extra.get("keep_schedule"))
        c = c.replace(teacher=f"cache:{t.name}", teacher_model=t.model, num_keep=num_keep if masked else 0,
                      criterion=criterion if masked else "topk", scorer=scorer if masked else "student")
    return c.replace(name=run_name(c, task))


def warmup_epochs(mode: str) -> int:
    """Full-KD epochs before MaskedKD 50% in the warm-up remedy (3 of the default 12; 1 in quick and smoke)."""
    return 3 if mode == "default" else 1


def warmup_run(mode: str, seed: int) -> TrainConfig:
    """The full-KD warm-up remedy: the teacher sees every patch for warmup_epochs(mode) epochs, then the 50% the
    student ranks highest (keep_schedule "100*3,50"). The same run as reproduce/beyond.py's warm-up row (named
    digits_student_sched100x3-50-sN in the default mode), so either script reuses the other's finished run."""
    c = student_run(mode, seed, None, keep_schedule=f"100*{warmup_epochs(mode)},50")
    return c.replace(epochs=2, eval_every=1) if mode == "smoke" else c  # smoke: 1 + 1 epochs


def run_name(c: TrainConfig, task: str = "digits") -> str:
    """A run's name, read off its config: what the teacher sees (no KD, full KD, kept count, schedule, adaptive
    budget, ToMe r, or the student masked instead), then the non-default criterion, scorer and kd kind, then the
    seed. The name is part of the config hash, so these names are the cache keys of every finished run."""
    kind = "" if c.kd_kind == "soft" else f"-{c.kd_kind}"
    if not c.teacher:
        what = "nokd"
    elif c.adaptive_mass:
        what = f"adaptive{int(100 * c.adaptive_mass)}max{c.num_keep}{kind}"
    elif c.teacher_tome_r:
        what = f"tome{c.teacher_tome_r}{kind}"
    elif c.keep_schedule:  # "100*3,50" -> 100x3-50
        what = "sched" + c.keep_schedule.replace(":", "to").replace("*", "x").replace(",", "-") + kind
    elif c.student_keep:
        what = f"studentkeep{c.student_keep}"
    elif not c.num_keep:
        what = f"kd{kind}"
    else:
        tag = ("" if c.criterion == "topk" else f"-{c.criterion}") + (
            "" if c.scorer == "student" else f"-by-{c.scorer.replace('cache:', '')}")
        what = f"keep{c.num_keep}{tag}{kind}"
    return f"{task}_student_{what}-s{c.seed}"
