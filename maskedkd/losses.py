"""The distillation loss: (1 - kd_weight) * CE(student, targets) + kd_weight * T^2 * KL(p_T || p_S).

Official MaskedKD / DeiT defaults [docs/paper.md#method]: kd_weight (their `--distillation-alpha`)
= 0.5, temperature (`--distillation-tau`) = 1, soft KD, KL summed over classes and averaged over the batch
(`batchmean`). DeiT's own soft loss divides the summed KL by batch x classes instead: `kl_reduction="deit"`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("soft", "hard", "manifold", "attention")
FEATURE_KINDS = ("manifold", "attention")
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


def manifold_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Patch-relation matching (manifold distillation, Hao et al. NeurIPS 2022): f_s (b k ds), f_t (b k dt) are
    student / teacher patch features at the same k positions (the teacher's kept patches). Widths may differ:
    only relations of L2-normalised features are compared, the intra-image (b k k) and the inter-image (k b b)
    ones, each as a mean squared difference. (The paper's third, randomly sampled term and its term weights are
    not transcribed (docs/paper.md#feature-kd); `feature_weight` in kd_loss_terms scales the sum.)"""
    if f_s.shape[:2] != f_t.shape[:2]:
        raise ValueError(f"student features {tuple(f_s.shape)} and teacher features {tuple(f_t.shape)} must share (b, k)")
    s, t = F.normalize(f_s.float(), dim=-1), F.normalize(f_t.float(), dim=-1)
    intra = torch.einsum("b i d, b j d -> b i j", s, s) - torch.einsum("b i d, b j d -> b i j", t, t)
    inter = torch.einsum("b k d, c k d -> k b c", s, s) - torch.einsum("b k d, c k d -> k b c", t, t)
    return intra.pow(2).mean() + inter.pow(2).mean()


def attention_loss(a_s: torch.Tensor, a_t: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Attention-map distillation on the kept patches: a_s, a_t (b k) are the student's and the teacher's
    last-block head-mean CLS attention over the same k patches; each is renormalised to sum to 1 over them and
    the loss is KL(a_t || a_s), averaged over the batch. O(k) per sample: no attention matrix is built."""
    if a_s.shape != a_t.shape:
        raise ValueError(f"attention maps {tuple(a_s.shape)} and {tuple(a_t.shape)} differ")
    p_s = a_s.float() / (a_s.float().sum(-1, keepdim=True) + eps)
    p_t = a_t.float() / (a_t.float().sum(-1, keepdim=True) + eps)
    return torch.sum(p_t * (torch.log(p_t + eps) - torch.log(p_s + eps)), dim=-1).mean()


def kd_loss_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor, *,
                  kd_weight: float = 0.5, temperature: float = 1.0, kind: str = "soft",
                  kl_reduction: str = "batchmean", features: tuple[torch.Tensor, torch.Tensor] | None = None,
                  feature_weight: float = 1.0, dist_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The loss and its parts: {"loss", "ce", "kd", "feat"}. teacher_logits=None: no distillation (loss = CE).
    kind="manifold" / "attention": soft logit KD plus feature_weight x the feature term on `features` =
    (student, teacher) patch features (manifold_loss) or CLS attention over the kept patches (attention_loss).
    dist_logits (b C): a distillation token's head, which takes the KD term while student_logits (the class head)
    takes the CE term: DeiT's two-head objective; with kind="hard" and kd_weight=0.5 G2SD's specific distillation,
    (CE(class head, labels) + CE(distillation head, teacher argmax)) / 2 (G2SD engine_finetune_dis.py)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight={kd_weight} must lie in [0, 1]")
    ce = cross_entropy(student_logits, targets)
    if teacher_logits is None:
        return {"loss": ce, "ce": ce, "kd": torch.zeros_like(ce), "feat": torch.zeros_like(ce)}
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} != student logits "
                         f"{tuple(student_logits.shape)}: do teacher and student have the same classes?")
    teacher_logits = teacher_logits.detach()
    feat = torch.zeros_like(ce)
    kd_logits = student_logits
    if dist_logits is not None:
        if kind in FEATURE_KINDS or dist_logits.shape != student_logits.shape:
            raise ValueError(f"dist_logits {tuple(dist_logits.shape)} need logit KD (soft or hard) and the class head's "
                             f"shape {tuple(student_logits.shape)}; kind={kind!r}")
        kd_logits = dist_logits
    if kind == "hard":  # DeiT's hard distillation: CE against the teacher's argmax
        kd = F.cross_entropy(kd_logits, teacher_logits.argmax(dim=-1))
    else:
        kd = kd_divergence(kd_logits, teacher_logits, temperature=temperature, kl_reduction=kl_reduction)
    if kind in FEATURE_KINDS:
        if features is None:
            raise ValueError(f"kind={kind!r} needs features=(student, teacher)")
        f_s, f_t = features
        feat = manifold_loss(f_s, f_t.detach()) if kind == "manifold" else attention_loss(f_s, f_t.detach())
        kd = kd + feature_weight * feat
    return {"loss": (1.0 - kd_weight) * ce + kd_weight * kd, "ce": ce, "kd": kd, "feat": feat}


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, targets: torch.Tensor, *,
            kd_weight: float = 0.5, temperature: float = 1.0, kind: str = "soft",
            kl_reduction: str = "batchmean") -> torch.Tensor:
    """Scalar (1 - kd_weight) * CE + kd_weight * T^2 * KL(p_T || p_S) (kind="soft"), or CE against the
    teacher's argmax (kind="hard"). Defaults are the official MaskedKD ones: 0.5, T = 1, soft, batchmean."""
    return kd_loss_terms(student_logits, teacher_logits, targets, kd_weight=kd_weight, temperature=temperature,
                         kind=kind, kl_reduction=kl_reduction)["loss"]
