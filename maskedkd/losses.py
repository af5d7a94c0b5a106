"""The distillation loss: (1 - kd_weight) * CE(student, targets) + kd_weight * T^2 * KL(p_T || p_S).

Official MaskedKD / DeiT defaults [digest 1.1, code `losses.py`]: kd_weight (their `--distillation-alpha`)
= 0.5, temperature (`--distillation-tau`) = 1, soft KD, KL summed over classes and averaged over the batch
(`batchmean`). DeiT's own soft loss divides the summed KL by batch x classes instead: `kl_reduction="deit"`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("soft", "hard")
REDUCTIONS = ("batchmean", "deit")


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (b C), targets (b,) class ids or (b C) soft targets (mixup / cutmix / label smoothing) -> mean CE."""
    if targets.ndim == 1:
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f"targets batch {targets.shape[0]} != logits batch {logits.shape[0]}")
        return F.cross_entropy(logits, targets)
    if targets.shape != logits.shape:
        raise ValueError(f"soft targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def kd_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0,
                  kl_reduction: str = "batchmean") -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, divided by b (batchmean) or b*C (deit)."""
    if kl_reduction not in REDUCTIONS:
        raise ValueError(f"kl_reduction={kl_reduction!r} is not one of {REDUCTIONS}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_ps = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_ps, log_pt, reduction="sum", log_target=True)
    denom = student_logits.shape[0] if kl_reduction == "batchmean" else student_logits.numel()
    return kl * (temperature**2) / denom


def kd_loss_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor, *,
                  kd_weight: float = 0.5, temperature: float = 1.0, kind: str = "soft",
                  kl_reduction: str = "batchmean") -> dict[str, torch.Tensor]:
    """The loss and its parts: {"loss", "ce", "kd"}. teacher_logits=None: no distillation (loss = CE)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight={kd_weight} must lie in [0, 1]")
    ce = cross_entropy(student_logits, targets)
    if teacher_logits is None:
        return {"loss": ce, "ce": ce, "kd": torch.zeros_like(ce)}
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} != student logits "
                         f"{tuple(student_logits.shape)}: do teacher and student have the same classes?")
    teacher_logits = teacher_logits.detach()
    if kind == "soft":
        kd = kd_divergence(student_logits, teacher_logits, temperature=temperature, kl_reduction=kl_reduction)
    else:  # DeiT's hard distillation: CE against the teacher's argmax
        kd = F.cross_entropy(student_logits, teacher_logits.argmax(dim=-1))
    return {"loss": (1.0 - kd_weight) * ce + kd_weight * kd, "ce": ce, "kd": kd}


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor, *,
            kd_weight: float = 0.5, temperature: float = 1.0, kind: str = "soft",
            kl_reduction: str = "batchmean") -> torch.Tensor:
    """Scalar (1 - kd_weight) * CE + kd_weight * T^2 * KL(p_T || p_S) (kind="soft"), or CE against the
    teacher's argmax (kind="hard"). Defaults are the official MaskedKD ones: 0.5, T = 1, soft, batchmean."""
    return kd_loss_terms(student_logits, teacher_logits, targets, kd_weight=kd_weight, temperature=temperature,
                         kind=kind, kl_reduction=kl_reduction)["loss"]
