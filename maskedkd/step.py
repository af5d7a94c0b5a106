"""The MaskedKD train step: the pure functions composed into one compiled, functional update.

student forward (full input, drop-path) -> CLS scores -> the teacher view (selection, teacher forward on prefix +
kept patches; no grad) -> loss -> gradients (torch.func.grad_and_value) -> optimizer update.
`num_keep=None` is vanilla KD and no teacher is no KD: all three come from this one code path, so a comparison
between them differs only in masking. What the teacher sees beyond `num_keep` lives in `maskedkd.view`.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from .attention import Params
from .config import ViTConfig
from .losses import kd_loss_terms
from .model import forward_tokens, gather_patches, head, head_pair
from .select import select_tokens
from .view import TeacherOut, TeacherView

NO_DECAY = ("pos_embed", "cls_token", "dist_token")


def layer_id(name: str, depth: int) -> int:
    """A parameter's layer for layer-wise lr decay, as MAE assigns it (util/lr_decay.py get_layer_id_for_vit): 0 for
    cls_token, pos_embed and patch_embed, i + 1 for blocks.i, depth + 1 for the rest (norms, fc_norm, heads and, as
    MAE and G2SD have it, dist_token)."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(names_ndim: dict[str, int], *, weight_decay: float, layer_decay: float = 0.0) -> list[dict]:
    """Optimizer groups over parameter names -> [{"names", "weight_decay"(, "lr_scale")}]. No weight decay on 1-D
    parameters and tokens (NO_DECAY), as DeiT/timm and MAE. layer_decay=0: two groups (decay, no decay), no scale.
    layer_decay > 0: MAE's param_groups_lrd, one group per (layer, decay) with lr_scale = layer_decay ** (depth + 1 -
    layer) (depth from the blocks.i names), ordered by descending scale (group 0: the head, at the schedule's lr)."""
    decays = {k: n > 1 and k not in NO_DECAY for k, n in names_ndim.items()}
    if not layer_decay:
        return [{"names": [k for k, d in decays.items() if d], "weight_decay": weight_decay},
                {"names": [k for k, d in decays.items() if not d], "weight_decay": 0.0}]
    depth = 1 + max((int(k.split(".")[1]) for k in names_ndim if k.startswith("blocks.")), default=-1)
    groups: dict[tuple[int, bool], dict] = {}
    for k, d in decays.items():
        i = layer_id(k, depth)
        g = groups.setdefault((i, d), {"names": [], "weight_decay": weight_decay if d else 0.0,
                                       "lr_scale": layer_decay ** (depth + 1 - i)})
        g["names"].append(k)
    return sorted(groups.values(), key=lambda g: -g["lr_scale"])


def make_optimizer(params: Params, *, lr: float, weight_decay: float = 0.05, betas=(0.9, 0.999),
                   eps: float = 1e-8, layer_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW as in DeiT/timm: no weight decay on biases, norms, layer scales and tokens (1-D or NO_DECAY).
    layer_decay > 0: MAE's layer-wise lr decay (param_groups); each group's "lr_scale" multiplies the schedule's lr
    (train.py sets g["lr"] = schedule * g["lr_scale"], as MAE's lr_sched.py)."""
    groups = param_groups({k: p.ndim for k, p in params.items()}, weight_decay=weight_decay, layer_decay=layer_decay)
    fused = all(p.is_cuda for p in params.values())
    return torch.optim.AdamW([{**{k: v for k, v in g.items() if k != "names"}, "params": [params[k] for k in g["names"]],
                               **({"lr": lr * g["lr_scale"]} if "lr_scale" in g else {})} for g in groups],
                             lr=lr, betas=betas, eps=eps, fused=fused or None, foreach=None if fused else True)


def cosine_lr(step: int, *, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 1e-5,
              warmup_lr: float = 1e-6) -> float:
    """Linear warm-up from warmup_lr to base_lr, then cosine decay to min_lr (timm's cosine schedule, per step)."""
    if step < warmup_steps:
        return warmup_lr + (base_lr - warmup_lr) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _autocast(device_type: str, precision: str):
    """bf16 autocast on CUDA ("auto") or wherever asked ("bf16"); fp32 otherwise."""
    if uses_bf16(device_type, precision):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


PRECISIONS = ("auto", "bf16", "fp32")


def uses_bf16(device_type: str, precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and device_type == "cuda")


def cast_matmul_weights(params: Params, dtype: torch.dtype = torch.bfloat16) -> Params:
    """A frozen model's matmul weights (every '*.weight' of 2 or more dims: linears, patch filters, talking heads)
    cast once to dtype: what autocast would cast at every step, so the model's outputs under autocast are the same,
    its weights take half the memory and no cast kernel runs per step. Norms, biases, position embeddings and
    tokens stay fp32 (autocast keeps them fp32 too); for a teacher or a fixed scorer, never a trained student."""
    return {k: v.to(dtype) if k.endswith(".weight") and v.ndim >= 2 and v.is_floating_point() else v
            for k, v in params.items()}


def resolve_view(teacher_cfg: ViTConfig | None, teacher: Params | None, num_keep: int | None,
                 view: TeacherView | None) -> TeacherView | None:
    """The view a step distils from: `view`, or MaskedKD's plain TeacherView(teacher_cfg, teacher, num_keep)."""
    if view is not None:
        if teacher_cfg is not None or teacher is not None or num_keep is not None:
            raise ValueError("give the teacher as view=TeacherView(...) or as teacher_cfg, teacher, num_keep; not both")
        return view
    if (teacher is None) != (teacher_cfg is None):
        raise ValueError("give both teacher_cfg and teacher params, or neither (no distillation)")
    if teacher is None:
        if num_keep is not None:
            raise ValueError("num_keep needs a teacher")
        return None
    return TeacherView(teacher_cfg, teacher, num_keep)


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


def make_loss_fn(student_cfg: ViTConfig, teacher_cfg: ViTConfig | None = None, teacher: Params | None = None, *,
                 num_keep: int | None = None, view: TeacherView | None = None, kd_weight: float = 0.5,
                 temperature: float = 1.0, kind: str = "soft", kl_reduction: str = "batchmean",
                 feature_weight: float = 1.0, drop_path: float = 0.0, student_keep: int | None = None,
                 precision: str = "auto") -> Callable:
    """(params, x, y) -> (loss, metrics): the whole objective as one pure function. The teacher is `view` (see
    maskedkd.view: criterion, scorer, adaptive budget, ToMe, schedule), or for plain MaskedKD just num_keep.
    kind="manifold" / "attention" add a feature term on the kept patches: the student's last-block patch tokens
    (or CLS attention) gathered at the teacher's kept indices [digest 2.8]. student_keep=k is the paper's opposite
    ablation [digest 2.5 right]: the STUDENT trains on k random patches and the teacher sees the full image.
    A distillation-token student (G2SD's DeiT-S) needs kind="hard": class head on the labels, distillation head on
    the teacher's argmax (losses.kd_loss_terms dist_logits); its scores drop both prefix columns."""
    view = resolve_view(teacher_cfg, teacher, num_keep, view)
    view = view and view.for_student(student_cfg)
    features = check_options(student_cfg, view, kind, student_keep, precision)
    n_s = student_cfg.num_prefix_tokens
    takes_logits = view is not None and view.mode == "full" and features is None

    def loss_fn(params: Params, x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None = None):
        with _autocast(x.device.type, precision):
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


def allow_compiled_graphs(count: int) -> None:
    """Let Dynamo keep `count` compiled graphs of the step (one per kept count: a keep schedule has one per distinct
    count) and fail, rather than fall back to eager in silence, past that. Dynamo caches graphs per code object and
    every step shares one (torch.func's wrapper), so its default limit of 8 would leave a schedule's later counts
    uncompiled. Each distinct count costs one compilation."""
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, count + 2)
    cfg.fail_on_recompile_limit_hit = True


def make_train_step(student_cfg: ViTConfig, teacher_cfg: ViTConfig | None = None, teacher: Params | None = None,
                    *, compile: bool | str = True, grad_sync: Callable[[dict[str, torch.Tensor]], None] | None = None,
                    **loss_options) -> Callable:
    """A step `(params, optimizer, x, y[, teacher_logits]) -> metrics dict` (loss, ce, kd, feat, kept_tokens,
    student_acc, agreement, teacher_acc; 0-d tensors, no host sync); teacher_logits replace a full view's forward
    (train.pool_logits). loss_options go to make_loss_fn (num_keep, view, kd_weight, ...).
    The gradient function is torch.compile-d once for a static kept count (compile may name a torch.compile backend;
    see allow_compiled_graphs for schedules); bf16 autocast on CUDA (selection
    scores stay fp32), fp32 on CPU unless precision="bf16". `grad_sync` all-reduces the gradients for data
    parallelism (see `maskedkd.train`). Parameters may require grad (as a Module's do): the step differentiates
    detached copies with torch.func and writes the gradients to the given tensors' .grad."""
    loss_fn = make_loss_fn(student_cfg, teacher_cfg, teacher, **loss_options)
    grad_fn = torch.func.grad_and_value(loss_fn, has_aux=True)
    if compile:
        grad_fn = torch.compile(grad_fn, **({"backend": compile} if isinstance(compile, str) else {}))

    def step(params: Params, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
             teacher_logits: torch.Tensor | None = None):
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
