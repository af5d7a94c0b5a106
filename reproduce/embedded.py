"""The embedded-scale runs shared by table 1, figure 2 and the analyses: one run per (seed, kept patches), named
by what it is, so every script that needs the same run finds it finished in results/runs/."""
from __future__ import annotations

from maskedkd.configs import MODELS, TrainConfig, get_config


def plan(mode: str) -> tuple[list[int], dict]:
    """Seeds and student-run settings for the default / quick / smoke modes."""
    if mode == "smoke":
        return [0], dict(epochs=1, train_size=256, test_size=200, batch_size=32)
    if mode == "quick":
        return [0], dict(epochs=4, train_size=8000)
    return [0, 1, 2], dict(epochs=8, train_size=10000)


def teacher_config(mode: str) -> TrainConfig:
    return get_config("digits_teacher_smoke" if mode == "smoke" else "digits_teacher")


def student_run(mode: str, seed: int, num_keep: int | None, *, teacher: bool = True, criterion: str = "topk",
                **extra) -> TrainConfig:
    """A student run: no KD (teacher=False), logit KD (num_keep None) or MaskedKD with num_keep patches."""
    _, kw = plan(mode)
    c = get_config("digits_student_nokd").replace(seed=seed, **kw, **extra)
    if not teacher:
        return c.replace(name=f"digits_student_nokd-s{seed}")
    t = teacher_config(mode)
    c = c.replace(teacher=f"cache:{t.name}", teacher_model=t.model, criterion=criterion)
    if num_keep is None or num_keep == MODELS[t.model].num_patches:
        return c.replace(name=f"digits_student_kd-s{seed}")
    tag = "" if criterion == "topk" else f"-{criterion}"
    return c.replace(name=f"digits_student_keep{num_keep}{tag}-s{seed}", num_keep=num_keep)
