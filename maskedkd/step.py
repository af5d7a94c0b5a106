"""The MaskedKD train step: the pure functions composed into one compiled, functional update.

student forward (full input, drop-path) -> CLS scores -> selection -> teacher forward on prefix + kept patches
(no grad, eval) -> loss -> gradients (torch.func.grad_and_value) -> optimizer update.
`num_keep=None` is vanilla KD and `teacher=None` is no KD: all three come from this one code path, so a
comparison between them differs only in masking.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from .attention import Params
from .config import ViTConfig
from .losses import FEATURE_KINDS, kd_loss_terms
from .model import forward_tokens, gather_patches, head, student_forward, teacher_forward
from .select import adaptive_budget, resample_scores, select_tokens

NO_DECAY = ("pos_embed", "cls_token", "dist_token")


def make_optimizer(params: Params, *, lr: float, weight_decay: float = 0.05, betas=(0.9, 0.999),
                   eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW as in DeiT/timm: no weight decay on biases, norms, layer scales and tokens (1-D or NO_DECAY)."""
    decay = [p for k, p in params.items() if p.ndim > 1 and k not in NO_DECAY]
    rest = [p for k, p in params.items() if not (p.ndim > 1 and k not in NO_DECAY)]
    fused = all(p.is_cuda for p in params.values())
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=betas, eps=eps, fused=fused or None, foreach=None if fused else True)


def cosine_lr(step: int, *, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 1e-5,
              warmup_lr: float = 1e-6) -> float:
    """Linear warm-up from warmup_lr to base_lr, then cosine decay to min_lr (timm's cosine schedule, per step)."""
    if step < warmup_steps:
        return warmup_lr + (base_lr - warmup_lr) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _autocast(device_type: str):
    if device_type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()  # fp32 on CPU


def make_selector(student_cfg: ViTConfig, teacher_cfg: ViTConfig | None, teacher: Params | None, *,
                  num_keep: int | None, criterion: str = "topk",
                  scorer: tuple[ViTConfig, Params] | str = "student") -> Callable:
    """(x, student scores (b n)) -> kept teacher-patch indices (b k), or None for no masking.
    `scorer` says whose last-block CLS attention ranks the patches: "student" (MaskedKD), "teacher" (the
    teacher's own attention: one extra full teacher pass), or (cfg, params) of a fixed model (the paper's DINO
    stand-in, one extra pass of that model) [digest 2.4]. Scores on another patch grid are resampled."""
    if scorer == "student":
        score_cfg = student_cfg
    elif scorer == "teacher":
        score_cfg = teacher_cfg
    elif isinstance(scorer, tuple):
        score_cfg, score_params = scorer
    else:
        raise ValueError(f"scorer={scorer!r} must be 'student', 'teacher' or a (config, params) pair")

    def select(x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor | None:
        if num_keep is None:
            return None
        if scorer == "teacher":
            scores = student_forward(teacher, x, teacher_cfg)[1]
        elif isinstance(scorer, tuple):
            scores = student_forward(score_params, x, score_cfg)[1]
        if score_cfg.grid_size != teacher_cfg.grid_size:
            scores = resample_scores(scores, score_cfg.grid_size, teacher_cfg.grid_size)
        return select_tokens(scores, num_keep, criterion)

    return select


def make_teacher_fn(student_cfg: ViTConfig, teacher_cfg: ViTConfig, teacher: Params, *, num_keep: int | None,
                    criterion: str = "topk", scorer: tuple[ViTConfig, Params] | str = "student",
                    tome_r: int = 0, adaptive_mass: float = 0.0) -> Callable:
    """(x, student scores) -> teacher logits: the masked teacher (MaskedKD), or with tome_r > 0 the unmasked
    teacher merging tome_r tokens per block (the paper's ToMe comparison [digest 2.5]), or with adaptive_mass
    > 0 a per-sample budget (select.adaptive_budget) of at most num_keep patches, padded to num_keep."""
    select = make_selector(student_cfg, teacher_cfg, teacher, num_keep=num_keep, criterion=criterion, scorer=scorer)
    if tome_r:
        if num_keep is not None:
            raise ValueError("merge tokens in the teacher (tome_r) or mask its input (num_keep), not both")
        from .tome import tome_forward
        return lambda x, scores: tome_forward(teacher, x, teacher_cfg, tome_r)
    if adaptive_mass:
        if num_keep is None or scorer != "student" or student_cfg.grid_size != teacher_cfg.grid_size:
            raise ValueError("adaptive_mass needs num_keep (the padded size), student scores and one patch grid")

        def adaptive(x, scores):
            idx, valid, _ = adaptive_budget(scores, adaptive_mass, num_keep)
            return head(teacher, forward_tokens(teacher, x, teacher_cfg, idx, check=False, keep_valid=valid)[0],
                        teacher_cfg)
        return adaptive
    return lambda x, scores: teacher_forward(teacher, x, teacher_cfg, select(x, scores), check=False)


def make_loss_fn(student_cfg: ViTConfig, teacher_cfg: ViTConfig | None = None, teacher: Params | None = None, *,
                 num_keep: int | None = None, criterion: str = "topk", kd_weight: float = 0.5,
                 temperature: float = 1.0, kind: str = "soft", kl_reduction: str = "batchmean",
                 drop_path: float = 0.0, scorer: tuple[ViTConfig, Params] | str = "student",
                 student_keep: int | None = None, feature_weight: float = 1.0, tome_r: int = 0,
                 adaptive_mass: float = 0.0) -> Callable:
    """(params, x, y) -> (loss, metrics): the whole MaskedKD objective as one pure function (scorer: see
    make_selector). student_keep=k is the paper's opposite ablation [digest 2.5 right]: the STUDENT trains on k
    random patches (plus prefix tokens) and the teacher sees the full image; evaluation stays on full images.
    kind="manifold" / "attention" add a feature term computed on the kept patches only: the student's last-block
    patch features (or CLS attention) gathered at the teacher's kept indices [digest 2.8]."""
    if (teacher is None) != (teacher_cfg is None):
        raise ValueError("give both teacher_cfg and teacher params, or neither (no distillation)")
    if teacher_cfg is not None and teacher_cfg.num_classes != student_cfg.num_classes:
        raise ValueError(f"teacher has {teacher_cfg.num_classes} classes, student {student_cfg.num_classes}")
    if num_keep is not None:
        if teacher_cfg is None:
            raise ValueError("num_keep needs a teacher")
        if not 1 <= num_keep <= teacher_cfg.num_patches:
            raise ValueError(f"num_keep={num_keep} is out of range 1..{teacher_cfg.num_patches}")
    select = make_selector(student_cfg, teacher_cfg, teacher, num_keep=num_keep, criterion=criterion, scorer=scorer)
    if teacher is not None:
        teacher_fn = make_teacher_fn(student_cfg, teacher_cfg, teacher, num_keep=num_keep, criterion=criterion,
                                     scorer=scorer, tome_r=tome_r, adaptive_mass=adaptive_mass)
    feature_kd = kind in FEATURE_KINDS
    if feature_kd and (teacher_cfg is None or teacher_cfg.grid_size != student_cfg.grid_size
                       or student_keep is not None):
        raise ValueError(f"kind={kind!r} needs a teacher on the student's patch grid (and no student masking)")
    if student_keep is not None:
        if num_keep is not None:
            raise ValueError("mask the student (student_keep) or the teacher (num_keep), not both")
        if not 1 <= student_keep <= student_cfg.num_patches:
            raise ValueError(f"student_keep={student_keep} is out of range 1..{student_cfg.num_patches}")

    def loss_fn(params: Params, x: torch.Tensor, y: torch.Tensor):
        with _autocast(x.device.type):
            if feature_kd:
                s_tokens, scores = forward_tokens(params, x, student_cfg, drop_path=drop_path, want_scores=True)
                logits = head(params, s_tokens, student_cfg)
            elif student_keep is None:
                logits, scores = student_forward(params, x, student_cfg, drop_path=drop_path)
            else:
                keep_s = select_tokens(torch.empty(x.shape[0], student_cfg.num_patches, device=x.device),
                                       student_keep, "random")
                logits = teacher_forward(params, x, student_cfg, keep_s, check=False, drop_path=drop_path)
                scores = torch.zeros(x.shape[0], student_cfg.num_patches, device=x.device)
            t_logits, features = None, None
            if teacher is not None:
                with torch.no_grad():
                    if feature_kd:
                        keep = select(x, scores.detach())
                        t_tokens, t_scores = forward_tokens(teacher, x, teacher_cfg, keep, check=False,
                                                            want_scores=kind == "attention")
                        t_logits = head(teacher, t_tokens, teacher_cfg).float()
                    else:
                        t_logits = teacher_fn(x, scores.detach()).float()
                if feature_kd:
                    if kind == "manifold":
                        f_s = s_tokens[:, student_cfg.num_prefix_tokens:]
                        f_s = f_s if keep is None else gather_patches(f_s, keep)
                        features = (f_s, t_tokens[:, teacher_cfg.num_prefix_tokens:])
                    else:
                        a_s = scores if keep is None else torch.gather(scores, 1, keep)
                        features = (a_s, t_scores)
        logits = logits.float()
        terms = kd_loss_terms(logits, t_logits, y, kd_weight=kd_weight, temperature=temperature, kind=kind,
                              kl_reduction=kl_reduction, features=features, feature_weight=feature_weight)
        target = y if y.ndim == 1 else y.argmax(dim=-1)
        pred = logits.argmax(dim=-1)
        metrics = {"ce": terms["ce"].detach(), "kd": terms["kd"].detach(), "feat": terms["feat"].detach(),
                   "student_acc": (pred == target).float().mean(),
                   "kept_tokens": torch.tensor(float(num_keep or (teacher_cfg or student_cfg).num_patches),
                                                device=x.device)}
        if adaptive_mass and teacher is not None:
            metrics["kept_tokens"] = adaptive_budget(scores.detach(), adaptive_mass, num_keep)[2].float().mean()
        if student_keep is not None:
            metrics["student_kept_tokens"] = torch.tensor(float(student_keep), device=x.device)
        if t_logits is not None:
            t_pred = t_logits.argmax(dim=-1)
            metrics["agreement"] = (pred == t_pred).float().mean()
            metrics["teacher_acc"] = (t_pred == target).float().mean()
        return terms["loss"], metrics

    return loss_fn


def make_train_step(student_cfg: ViTConfig, teacher_cfg: ViTConfig | None = None, teacher: Params | None = None,
                    *, num_keep: int | None = None, criterion: str = "topk", kd_weight: float = 0.5,
                    temperature: float = 1.0, kind: str = "soft", kl_reduction: str = "batchmean",
                    drop_path: float = 0.0, compile: bool = True, scorer: tuple[ViTConfig, Params] | str = "student",
                    student_keep: int | None = None, feature_weight: float = 1.0, tome_r: int = 0,
                    adaptive_mass: float = 0.0, grad_sync: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Callable:
    """A step `(params, optimizer, x, y) -> metrics dict` (loss, ce, kd, kept_tokens, student_acc, agreement,
    teacher_acc; 0-d tensors, no host sync). The gradient function is torch.compile-d once for a static
    num_keep; bf16 autocast on CUDA (selection scores stay fp32), fp32 on CPU. `grad_sync` all-reduces the
    gradients for data parallelism (see `maskedkd.train`)."""
    loss_fn = make_loss_fn(student_cfg, teacher_cfg, teacher, num_keep=num_keep, criterion=criterion,
                           kd_weight=kd_weight, temperature=temperature, kind=kind, kl_reduction=kl_reduction,
                           drop_path=drop_path, scorer=scorer, student_keep=student_keep,
                           feature_weight=feature_weight, tome_r=tome_r, adaptive_mass=adaptive_mass)
    grad_fn = torch.func.grad_and_value(loss_fn, has_aux=True)
    if compile:
        grad_fn = torch.compile(grad_fn)

    def step(params: Params, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
        grads, (loss, metrics) = grad_fn(params, x, y)
        if grad_sync is not None:
            grad_sync(grads)
        for k, p in params.items():
            p.grad = grads[k]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach(), **metrics}

    step.loss_fn = loss_fn
    return step
