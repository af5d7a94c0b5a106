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
    --checkpoints, --dry-run, ...; see reproduce/full.py) go to full_main, and None is returned."""
    ap.add_argument("--full", action="store_true", help="ImageNet scale with real checkpoints (reproduce/full.py)")
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
    return [0, 1, 2], {}  # the student config's own recipe (configs/digits.py)


def teacher_config(mode: str, task: str = "digits") -> TrainConfig:
    return get_config(f"{task}_teacher_smoke" if mode == "smoke" else f"{task}_teacher")


def student_run(mode: str, seed: int, num_keep: int | None, *, teacher: bool = True, criterion: str = "topk",
                scorer: str = "student", task: str = "digits", **extra) -> TrainConfig:
    """A student run: no KD (teacher=False), logit KD (num_keep None) or MaskedKD with num_keep patches."""
    _, kw = plan(mode, task)
    c = get_config(f"{task}_student_nokd").replace(seed=seed, **kw, **extra)
    if not teacher:
        return c.replace(name=f"{task}_student_nokd-s{seed}")
    t = teacher_config(mode, task)
    c = c.replace(teacher=f"cache:{t.name}", teacher_model=t.model, criterion=criterion, scorer=scorer)
    kind = "" if c.kd_kind == "soft" else f"-{c.kd_kind}"
    tag = ("" if criterion == "topk" else f"-{criterion}") + ("" if scorer == "student" else
                                                            f"-by-{scorer.replace('cache:', '')}")
    if extra.get("adaptive_mass"):
        return c.replace(name=f"{task}_student_adaptive{int(100 * extra['adaptive_mass'])}max{num_keep}{kind}-s{seed}",
                         num_keep=num_keep)
    if extra.get("teacher_tome_r"):
        return c.replace(name=f"{task}_student_tome{extra['teacher_tome_r']}{kind}-s{seed}", num_keep=0)
    if extra.get("keep_schedule"):
        spec = extra["keep_schedule"].replace(":", "to").replace("*", "x").replace(",", "-")  # "100*3,50" -> 100x3-50
        return c.replace(name=f"{task}_student_sched{spec}{kind}-s{seed}", num_keep=0)
    if extra.get("student_keep"):
        return c.replace(name=f"{task}_student_studentkeep{extra['student_keep']}-s{seed}")
    if num_keep is None or num_keep == MODELS[t.model].num_patches:
        return c.replace(name=f"{task}_student_kd{kind}-s{seed}", scorer="student", criterion="topk")
    return c.replace(name=f"{task}_student_keep{num_keep}{tag}{kind}-s{seed}", num_keep=num_keep)
