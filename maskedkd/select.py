"""Masking criteria: scores (b n) -> kept patch indices (b k). A registry so new criteria plug in.

Every criterion is a pure function `(scores, num_keep, generator) -> (b, num_keep) int64`.
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

Criterion = Callable[[torch.Tensor, int, "torch.Generator | None"], torch.Tensor]
CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Decorator: add a criterion `(scores (b n), num_keep, generator) -> idx (b k)` under `name`."""
    def add(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn
    return add


@register_criterion("topk")
def topk(scores: torch.Tensor, num_keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The official MaskedKD criterion: the num_keep highest-scoring patches of each sample."""
    return torch.topk(scores, num_keep, dim=-1).indices


@register_criterion("bottomk")
def bottomk(scores: torch.Tensor, num_keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The inverse criterion: the num_keep lowest-scoring patches (the paper's sanity check)."""
    return torch.topk(scores, num_keep, dim=-1, largest=False).indices


@register_criterion("random")
def random(scores: torch.Tensor, num_keep: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """num_keep patches per sample uniformly at random, without replacement; `scores` gives only the shape."""
    noise = torch.rand(scores.shape, device=scores.device, generator=generator)
    return torch.topk(noise, num_keep, dim=-1).indices


def select_tokens(scores: torch.Tensor, num_keep: int, criterion: str = "topk",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """scores (b n) -> (b num_keep) int64 indices of the patches the teacher sees."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; registered criteria: {sorted(CRITERIA)}")
    if scores.ndim != 2:
        raise ValueError(f"scores must be (b, num_patches), got shape {tuple(scores.shape)}")
    n = scores.shape[1]
    try:
        k = operator.index(num_keep)
    except TypeError:
        raise ValueError(f"num_keep={num_keep!r} must be an integer") from None
    if isinstance(num_keep, bool) or not 1 <= k <= n:
        raise ValueError(f"num_keep={num_keep!r} is out of range 1..{n} (num_patches)")
    return CRITERIA[criterion](scores, k, generator)


# Kept counts behind the paper's percentage labels [digest 1.3 / 2.7: derived from the paper's PFLOPs]:
# on the 14x14 grid "75%" keeps 144 (not 147), "50%" 98, "40%" 80, "25%" 49; on 16x16, 192 and 128.
PAPER_KEEP_COUNTS: dict[tuple[int, float], int] = {
    (196, 0.75): 144, (196, 0.5): 98, (196, 0.4): 80, (196, 0.25): 49,
    (256, 0.75): 192, (256, 0.5): 128,
}


def keep_count(num_patches: int, ratio: float, *, convention: str = "paper") -> int:
    """Patches kept for a keep ratio. convention="paper": the paper's counts for its labels where it has one
    (196 patches: 75% -> 144, 50% -> 98, 40% -> 80, 25% -> 49; 256: 192, 128), else round(ratio * n);
    "exact": always round(ratio * n). Clamped to 1..num_patches."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"keep ratio {ratio!r} must lie in (0, 1]")
    if convention not in ("paper", "exact"):
        raise ValueError(f"convention {convention!r} must be 'paper' or 'exact'")
    if convention == "paper" and (num_patches, round(ratio, 6)) in PAPER_KEEP_COUNTS:
        return PAPER_KEEP_COUNTS[(num_patches, round(ratio, 6))]
    return max(1, min(num_patches, round(ratio * num_patches)))


def resample_scores(scores: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> torch.Tensor:
    """scores (b, gh*gw) on the student's grid -> (b, Gh*Gw) on the teacher's grid, by bilinear resampling of
    the score map (align_corners=False: each cell samples the student map at its centre). This lets a
    patch-16 student (14x14) pick patches for a patch-14 teacher (16x16), a paper row the official code lacks."""
    gh, gw = src_grid
    if scores.ndim != 2 or scores.shape[1] != gh * gw:
        raise ValueError(f"scores shape {tuple(scores.shape)} does not match source grid {src_grid}")
    if tuple(src_grid) == tuple(dst_grid):
        return scores
    m = rearrange(scores, "b (gh gw) -> b 1 gh gw", gh=gh, gw=gw)
    m = F.interpolate(m.float(), size=tuple(dst_grid), mode="bilinear", align_corners=False)
    return rearrange(m, "b 1 gh gw -> b (gh gw)")


def adaptive_budget(scores: torch.Tensor, mass: float, max_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample budget (beyond the paper): each sample keeps the fewest top patches whose share of its CLS
    attention over patches reaches `mass`, at most max_keep; padded to the static size max_keep for compilation.
    scores (b n) -> (keep_idx (b max_keep) by descending score, valid (b max_keep) bool, count (b,))."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"attention mass {mass!r} must lie in (0, 1]")
    idx = select_tokens(scores, max_keep, "topk")  # sorted by descending score
    share = torch.gather(scores, 1, idx) / scores.sum(-1, keepdim=True).clamp_min(1e-12)
    count = ((share.cumsum(-1) < mass).sum(-1) + 1).clamp(max=max_keep)
    valid = torch.arange(max_keep, device=scores.device)[None] < count[:, None]
    return idx, valid, count
