"""Masking criteria: scores (b n) -> kept patch indices (b k). A registry so new criteria plug in.

Every criterion is a pure function `(scores, num_keep, generator) -> (b, num_keep) int64`; one registered with
`uses_spread=True` also gets `spread` (b n), each patch's pixel spread (patch_spread), computed from the input the
teacher sees: no model forward.
"""
from __future__ import annotations

import importlib
import operator
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from .checks import InputError, as_int, as_number

Criterion = Callable[[torch.Tensor, int, "torch.Generator | None"], torch.Tensor]
CRITERIA: dict[str, Criterion] = {}
SPREAD_CRITERIA: set[str] = set()  # criteria that also take `spread`
BUILTIN_NAMES = ("topk", "bottomk", "random", "topk_flat_last")


def register_criterion(name: str, *, uses_spread: bool = False) -> Callable[[Criterion], Criterion]:
    """Decorator: add a criterion `(scores (b n), num_keep, generator) -> idx (b k)` under `name`; uses_spread: it
    takes `spread` (b n) too, the pixel spread of each patch (patch_spread)."""
    def add(fn: Criterion) -> Criterion:
        if name in BUILTIN_NAMES and CRITERIA.get(name, fn) is not fn:
            raise ValueError(f"criterion {name!r} is built in; register a plug-in under another name")
        CRITERIA[name] = fn  # a plug-in registered again (a re-run notebook cell) takes its new definition
        (SPREAD_CRITERIA.add if uses_spread else SPREAD_CRITERIA.discard)(name)
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


def patch_spread(patches: torch.Tensor, channels: int) -> torch.Tensor:
    """patches (b n (c p)) as patchify gives them -> (b n): the standard deviation of each patch's pixels, channel by
    channel, averaged over the channels. A flat patch (sky, an empty page, silence) has a spread near 0."""
    return rearrange(patches, "b n (c p) -> b n c p", c=channels).float().std(-1).mean(-1)


FLAT_RATIO = 0.25  # topk_flat_last's one knob: a patch is flat below this share of its image's mean patch spread


@register_criterion("topk_flat_last", uses_spread=True)
def topk_flat_last(scores: torch.Tensor, num_keep: int, generator: torch.Generator | None = None, *,
                   spread: torch.Tensor) -> torch.Tensor:
    """The student's top num_keep, flat patches last: patches whose pixel spread is below FLAT_RATIO of their image's
    mean patch spread come after every other patch, each group in the student's order. Where an image has
    num_keep patches that are not flat this is topk over them; elsewhere the flat ones with the highest scores fill
    the remainder. Against attention sinks on blank regions (a ViT parks attention on low-information tokens),
    which topk would spend the teacher's budget on; no forward of any model (the spread comes from the pixels)."""
    flat = spread < FLAT_RATIO * spread.mean(-1, keepdim=True)
    span = (scores.amax(-1, keepdim=True) - scores.amin(-1, keepdim=True)).detach()
    return torch.topk(scores - flat * (span + 1), num_keep, dim=-1).indices


BUILTIN_CRITERIA = frozenset(CRITERIA)


def check_criterion(name: str) -> Criterion:
    """The criterion registered under `name`. "module:name" first imports `module` (which registers `name` with
    `register_criterion`), so a plug-in criterion also reaches runs started in other processes."""
    if name not in CRITERIA and isinstance(name, str) and ":" in name:
        module, _, short = name.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ValueError(f"criterion {name!r}: cannot import module {module!r} ({e})") from None
        if short in CRITERIA and CRITERIA[short].__module__ == module:
            CRITERIA[name] = CRITERIA[short]
            if short in SPREAD_CRITERIA:
                SPREAD_CRITERIA.add(name)
        elif short in CRITERIA:
            raise ValueError(f"criterion {name!r}: module {module!r} registers no criterion {short!r} (the one "
                             f"registered under that name comes from {CRITERIA[short].__module__!r})")
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; registered criteria: {sorted(CRITERIA)} (a plug-in: "
                         f"'module:name' with a module that calls register_criterion('name'))")
    return CRITERIA[name]


def check_criterion_name(name: str) -> str:
    """A criterion name as a config holds it, checked without importing anything: a registered name, or
    "module:name" (its module is imported where the run starts, check_criterion)."""
    if not isinstance(name, str) or not (name in CRITERIA or (name.count(":") == 1 and all(name.split(":")))):
        raise InputError(f"criterion={name!r} is not a registered criterion {sorted(CRITERIA)} nor a plug-in "
                         f"'module:name' (a module that calls register_criterion('name'))")
    return name


def select_tokens(scores: torch.Tensor, num_keep: int, criterion: str = "topk",
                  generator: torch.Generator | None = None, spread: torch.Tensor | None = None) -> torch.Tensor:
    """scores (b n) -> (b num_keep) int64 indices of the patches the teacher sees; spread (b n): each patch's pixel
    spread, for (and only for) a criterion registered with uses_spread."""
    fn = check_criterion(criterion)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (b, num_patches), got shape {tuple(scores.shape)}")
    if (spread is not None) != (criterion in SPREAD_CRITERIA):
        raise ValueError(f"criterion {criterion!r} " + ("takes the patches' spread: pass spread=patch_spread(...)"
                                                        if spread is None else "takes no spread"))
    if spread is not None and spread.shape != scores.shape:
        raise ValueError(f"spread of shape {tuple(spread.shape)}: expected the scores' {tuple(scores.shape)}")
    n = scores.shape[1]
    try:
        k = operator.index(num_keep)
    except TypeError:
        raise ValueError(f"num_keep={num_keep!r} must be an integer") from None
    if isinstance(num_keep, bool) or not 1 <= k <= n:
        raise ValueError(f"num_keep={num_keep!r} is out of range 1..{n} (num_patches)")
    return fn(scores, k, generator) if spread is None else fn(scores, k, generator, spread=spread)


# Kept counts behind the paper's percentage labels [docs/paper.md#kept-counts, #flops-model]:
# on the 14x14 grid "75%" keeps 144 (not 147), "50%" 98, "40%" 80, "25%" 49; on 16x16, 192 and 128.
PAPER_KEEP_COUNTS: dict[tuple[int, float], int] = {
    (196, 0.75): 144, (196, 0.5): 98, (196, 0.4): 80, (196, 0.25): 49,
    (256, 0.75): 192, (256, 0.5): 128,
}


def keep_count(num_patches: int, ratio: float, *, convention: str = "paper") -> int:
    """Patches kept for a keep ratio (a percent p is ratio p / 100): the one rounding rule of the project, used by
    keep_ratio, keep schedules and the cost tables. convention="paper": the paper's counts for its labels where it
    has one (196 patches: 75% -> 144, 50% -> 98, 40% -> 80, 25% -> 49; 256: 192, 128), else round(ratio * n);
    "exact": always round(ratio * n). A ratio that keeps no patch (round(ratio * n) = 0) raises."""
    n = as_int(num_patches, "num_patches", "[1, inf)", "the teacher's patches")
    ratio = as_number(ratio, "keep ratio", "(0, 1]", "the share of the patches kept")
    if convention not in ("paper", "exact"):
        raise ValueError(f"convention {convention!r} must be 'paper' or 'exact'")
    if convention == "paper" and (n, round(ratio, 6)) in PAPER_KEEP_COUNTS:
        return PAPER_KEEP_COUNTS[(n, round(ratio, 6))]
    k = round(ratio * n)
    if k < 1:
        raise InputError(f"keep ratio {ratio!r} of {n} patches keeps {ratio * n:.3g} patches, which rounds to none "
                         f"(a percent p is the ratio p / 100)")
    return min(n, k)


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
    mass = as_number(mass, "adaptive_mass", "(0, 1]", "a share of the student's CLS attention")
    idx = select_tokens(scores, max_keep, "topk")  # sorted by descending score
    share = torch.gather(scores, 1, idx) / scores.sum(-1, keepdim=True).clamp_min(1e-12)
    count = ((share.cumsum(-1) < mass).sum(-1) + 1).clamp(max=max_keep)
    valid = torch.arange(max_keep, device=scores.device)[None] < count[:, None]
    return idx, valid, count


def parse_keep_schedule(spec: str, epochs: int) -> list[tuple[float, int]]:
    """A keep_schedule spec -> phases [(percent, epochs), ...] covering `epochs` ("A:B" gives one (A, 0), (B, 0) pair
    marked linear by epochs 0): the syntax, the percent range (0, 100] and the phase lengths checked, so a config can
    refuse a bad spec before it knows its patch count. A spec whose every percent is at most 1 reads as fractions
    ("0.25:0.75" for 25:75) and is refused."""
    epochs = as_int(epochs, "epochs", "[1, inf)", "the run's epochs")
    if not isinstance(spec, str):
        raise InputError(f"keep_schedule={spec!r} must be text such as '25:75' or '100*3,50', not {type(spec).__name__}")
    bad = (f"keep_schedule={spec!r} must look like '25:75' (linear, percent) or '100*3,50' (percent*epochs "
           f"phases, the last without epochs)")
    try:
        if ":" in spec:
            a, b = (float(v) for v in spec.split(":"))
            phases = [(a, 0), (b, 0)]
        else:
            *first, last = spec.split(",")
            phases = [(float(p), int(e)) for p, e in (h.split("*") for h in first)] + [(float(last), epochs)]
    except ValueError:
        raise InputError(bad) from None
    for pct, _ in phases:
        if not 0 < pct <= 100:
            raise InputError(f"{bad}: {pct:g}% is out of range (0, 100]")
    if all(pct <= 1 for pct, _ in phases):
        raise InputError(f"{bad}: every percent is at most 1%, which reads as fractions; the spec takes percent "
                         f"(25:75 keeps 25% then 75%)")
    if ":" not in spec and (any(e < 1 for _, e in phases[:-1]) or sum(e for _, e in phases[:-1]) >= epochs):
        raise InputError(f"keep_schedule={spec!r}: each phase needs >= 1 epoch and the last phase must start before "
                         f"epoch {epochs} (epochs={epochs})")
    return phases


def keep_schedule(spec: str, num_patches: int, epochs: int) -> tuple[int | None, ...]:
    """Kept patches per epoch (None: the full view, plain logit KD), every count by `keep_count`. spec is
    "A:B" (percent): grows linearly from A% in the first epoch to B% in the last (a keep-count curriculum: the
        paper's open question), or
    "A*E,B" (percent, epochs): A% for the first E epochs, then B% (e.g. "100*3,50": full KD while the student's
        attention is immature, MaskedKD after); more phases chain ("100*2,75*4,50"); the last lasts to the end."""
    phases = parse_keep_schedule(spec, epochs)
    n = as_int(num_patches, "num_patches", "[1, inf)", "the teacher's patches")

    def count(pct: float) -> int | None:
        k = keep_count(n, pct / 100)
        return None if k == n else k
    if ":" in spec:
        (a, _), (b, _) = phases
        return tuple(count(a + (b - a) * (e / max(1, epochs - 1))) for e in range(epochs))
    per_epoch = [count(p) for p, e in phases[:-1] for _ in range(e)]
    return tuple(per_epoch + [count(phases[-1][0])] * (epochs - len(per_epoch)))
