"""The MaskedKD train step: the pure functions composed into one compiled, functional update.

student forward (full input, drop-path) -> CLS scores -> the teacher view (selection, teacher forward on prefix +
kept patches; no grad) -> loss -> gradients (torch.func.grad_and_value) -> optimizer update.
The teacher is a `TeacherView` (maskedkd.view): with num_keep=None it is vanilla KD, and no view is no KD. All three
come from this one code path, so a comparison between them differs only in masking. The optimizer and schedule live
in maskedkd.optim, precision and compilation helpers in maskedkd.precision.
"""
from __future__ import annotations

from typing import Callable

import torch

from .attention import Params
from .config import ViTConfig
from .losses import kd_loss_terms
from .model import check_params, forward_tokens, gather_patches, head, head_pair
from .precision import PRECISIONS, autocast
from .select import select_tokens
from .view import TeacherOut, TeacherView


def check_options(student_cfg: ViTConfig, view: TeacherView | None, kind: str, student_keep: int | None,
                  precision: str) -> str | None:
    """Raise for loss options that cannot combine; return the teacher features the loss needs (None, "tokens" or
    "attention")."""
    features = {"manifold": "tokens", "attention": "attention"}.get(kind)
    if student_cfg.head == "token_dist" and (view is None or kind != "hard" or student_keep is not None):
        raise ValueError(f"student {student_cfg.name!r} has a distillation token: its class head learns the labels and "
                         f"its distillation head the teacher's argmax (DeiT hard distillation, G2SD), which needs a "
                         f"teacher and kind='hard' (got {'no teacher' if view is None else f'kind={kind!r}'}); "
                         f"averaging both heads into one loss is not done")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} must be one of {PRECISIONS}")
    if features and (view is None or view.mode not in ("full", "mask") or view.cfg.grid_size != student_cfg.grid_size):
        raise ValueError(f"kind={kind!r} needs a teacher on the student's patch grid that masks or sees all patches, "
                         f"got {'no teacher' if view is None else f'mode {view.mode!r}, grid {view.cfg.grid_size}'}")
    if student_keep is not None:
        if (view is not None and view.mode != "full") or features:
            raise ValueError("mask the student (student_keep) or the teacher (a view with num_keep), not both")
        if not 1 <= student_keep <= student_cfg.num_patches:
            raise ValueError(f"student_keep={student_keep} is out of range 1..{student_cfg.num_patches}")
    return features


def make_loss_fn(student_cfg: ViTConfig, *, view: TeacherView | None = None, kd_weight: float = 0.5,
                 temperature: float = 1.0, kind: str = "soft", kl_reduction: str = "batchmean",
                 feature_weight: float = 1.0, drop_path: float = 0.0, student_keep: int | None = None,
                 precision: str = "auto") -> Callable:
    """(params, x, y) -> (loss, metrics): the whole objective as one pure function. The teacher is `view`, a
    TeacherView (MaskedKD: `TeacherView(teacher_cfg, teacher_params, num_keep)`; criterion, scorer, adaptive budget,
    ToMe and schedules are its options, see maskedkd.view); no view: no distillation.
    kind="manifold" / "attention" add a feature term on the kept patches: the student's last-block patch tokens
    (or CLS attention) gathered at the teacher's kept indices [docs/paper.md#feature-kd]. student_keep=k is the
    paper's opposite
    ablation [docs/paper.md#ablations]: the STUDENT trains on k random patches and the teacher sees the full image.
    A distillation-token student (G2SD's DeiT-S) needs kind="hard": class head on the labels, distillation head on
    the teacher's argmax (losses.kd_loss_terms dist_logits); its scores drop both prefix columns."""
    if view is not None and not isinstance(view, TeacherView):
        raise TypeError(f"view must be a TeacherView (the teacher and what it sees), got {type(view).__name__}")
    view = view and view.for_student(student_cfg)
    features = check_options(student_cfg, view, kind, student_keep, precision)
    n_s = student_cfg.num_prefix_tokens
    takes_logits = view is not None and view.mode == "full" and features is None

    def loss_fn(params: Params, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None):
        with autocast(x.device.type, precision):
            keep_s = None if student_keep is None else select_tokens(
                torch.empty(x.shape[0], student_cfg.num_patches, device=x.device), student_keep, "random")
            s_tokens, scores = forward_tokens(params, x, student_cfg, keep_s, check=False, drop_path=drop_path,
                                              want_scores=keep_s is None)
            # a distillation token's head takes the KD term, the class head the CE term (check_options)
            logits, d_logits = (head_pair(params, s_tokens) if student_cfg.head == "token_dist" else
                                (head(params, s_tokens, student_cfg), None))
            t, feats = None, None
            if teacher_logits is not None:  # a full view's logits of these samples, computed before (train.py)
                if not takes_logits:
                    raise ValueError(f"teacher_logits replace a full view's forward; this loss has "
                                     f"{'no teacher' if view is None else f'a {view.mode!r} view'}"
                                     f"{f' and a {kind!r} feature term' if features else ''}")
                if teacher_logits.shape != (x.shape[0], view.cfg.num_classes):
                    raise ValueError(f"teacher_logits of shape {tuple(teacher_logits.shape)}, expected "
                                     f"{(x.shape[0], view.cfg.num_classes)}")
                t = TeacherOut(teacher_logits, None, None, None,
                               torch.full((x.shape[0],), float(view.cfg.num_patches), device=x.device))
            elif view is not None:
                with torch.no_grad():
                    t = view(x, None if scores is None else scores.detach(), features=features)
                if kind == "manifold":
                    f_s = s_tokens[:, n_s:]
                    feats = (f_s if t.keep_idx is None else gather_patches(f_s, t.keep_idx),
                             t.tokens[:, view.cfg.num_prefix_tokens:])
                elif kind == "attention":
                    feats = (scores if t.keep_idx is None else torch.gather(scores, 1, t.keep_idx), t.attention)
        logits, d_logits = logits.float(), None if d_logits is None else d_logits.float()
        t_logits = None if t is None else t.logits.float()
        terms = kd_loss_terms(logits, t_logits, y, kd_weight=kd_weight, temperature=temperature, kind=kind,
                              kl_reduction=kl_reduction, features=feats, feature_weight=feature_weight,
                              dist_logits=d_logits)
        target = y if y.ndim == 1 else y.argmax(dim=-1)
        pred = (logits if d_logits is None else (logits + d_logits) / 2).argmax(dim=-1)  # as evaluation predicts
        kept = t.num_kept.mean() if t is not None else torch.tensor(float(student_cfg.num_patches), device=x.device)
        metrics = {"ce": terms["ce"].detach(), "kd": terms["kd"].detach(), "feat": terms["feat"].detach(),
                   "student_acc": (pred == target).float().mean(), "kept_tokens": kept}
        if student_keep is not None:
            metrics["student_kept_tokens"] = torch.tensor(float(student_keep), device=x.device)
        if t is not None:
            t_pred = t_logits.argmax(dim=-1)
            metrics["agreement"] = (pred == t_pred).float().mean()
            metrics["teacher_acc"] = (t_pred == target).float().mean()
        return terms["loss"], metrics

    loss_fn.takes_teacher_logits = takes_logits
    return loss_fn


def make_train_step(student_cfg: ViTConfig, *, view: TeacherView | None = None, compile: bool | str = True,
                    grad_sync: Callable[[dict[str, torch.Tensor]], None] | None = None, **loss_options) -> Callable:
    """A step `(params, optimizer, x, y[, teacher_logits]) -> metrics dict` (loss, ce, kd, feat, kept_tokens,
    student_acc, agreement, teacher_acc; 0-d tensors, no host sync); teacher_logits replace a full view's forward
    (maskedkd.train.pool_logits). `view` is the teacher (make_loss_fn); loss_options go to make_loss_fn (kd_weight,
    temperature, kind, ...). The gradient function is torch.compile-d once for a static kept count (compile may name
    a torch.compile backend; see precision.allow_compiled_graphs for schedules); bf16 autocast on CUDA (selection
    scores stay fp32), fp32 on CPU unless precision="bf16". `grad_sync` all-reduces the gradients for data
    parallelism (see `maskedkd.train`). Parameters may require grad (as a Module's do): the step differentiates
    detached copies with torch.func and writes the gradients to the given tensors' .grad."""
    loss_fn = make_loss_fn(student_cfg, view=view, **loss_options)
    grad_fn = torch.func.grad_and_value(loss_fn, has_aux=True)
    if compile:
        grad_fn = torch.compile(grad_fn, **({"backend": compile} if isinstance(compile, str) else {}))

    checked = []  # the student's parameters are checked against student_cfg once, at the first call

    def step(params: Params, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             teacher_logits: torch.Tensor | None = None):
        if not checked:
            check_params(params, student_cfg, "the student's params")
            checked.append(True)
        grads, (loss, metrics) = grad_fn({k: p.detach() for k, p in params.items()}, x, y, teacher_logits)
        if grad_sync is not None:
            grad_sync(grads)
        for k, p in params.items():
            p.grad = grads[k]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"loss": loss.detach(), **metrics}

    step.loss_fn = loss_fn
    step.takes_teacher_logits = loss_fn.takes_teacher_logits
    return step
