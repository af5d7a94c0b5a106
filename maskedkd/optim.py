"""The optimizer and the learning-rate schedule of the training program: AdamW with DeiT/timm's weight-decay groups
(MAE's layer-wise decay as an option) and timm's warm-up + cosine schedule, per step."""
from __future__ import annotations

import math

import torch

from .attention import Params

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
