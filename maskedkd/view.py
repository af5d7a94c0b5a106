"""What the teacher sees, and how: one frozen value, validated once, called as
`(x, student scores) -> TeacherOut(logits, tokens, attention, keep_idx, num_kept)`.

MaskedKD is `TeacherView(cfg, params, num_keep)`: the student's last-block CLS attention ranks the patches and the
teacher sees its prefix tokens plus the top `num_keep`. `num_keep=None` is the full view (plain logit KD). Each
analysis changes one field, and the loss, the evaluation and the analyses all call the same view:

- `criterion`: how scores become kept indices ("topk", "bottomk", "random", or a `select.register_criterion`
  plug-in; "module:name" imports the module that registers it, so subprocesses find it too);
- `scorer`: whose last-block CLS attention ranks the patches: "student" (MaskedKD), "teacher" (its own attention,
  one extra full pass) or a fixed `(cfg, params)` model (the paper's DINO stand-in) [docs/paper.md#masking-criteria];
  scores on another patch grid (`for_student`) are resampled onto the teacher's, scores of any other shape raise;
- `adaptive_mass`: a per-sample budget, the fewest top patches holding this share of the student's attention, at
  most `num_keep` (padded to `num_keep` with a key mask: static shapes) (beyond the paper);
- `tome_r`: no masking: the full teacher merges `tome_r` tokens per block (the paper's ToMe comparison)
  [docs/paper.md#ablations];
- `schedule`: a kept count per epoch (`select.keep_schedule`); `at_epoch(e)` is the fixed view of epoch e.

Combinations that cannot mean anything raise at construction: nothing is silently ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .attention import Params
from .config import ViTConfig
from .checks import InputError, as_int, as_number
from .model import check_params, forward_tokens, head, student_forward, teacher_forward
from .patchify import patchify, to_image_layout
from .select import SPREAD_CRITERIA, adaptive_budget, check_criterion, patch_spread, resample_scores, select_tokens


class TeacherOut(NamedTuple):
    logits: torch.Tensor  # (b C)
    tokens: torch.Tensor | None  # (b, np + k, d) normed teacher tokens, with features="tokens"
    attention: torch.Tensor | None  # (b k) teacher's last-block CLS attention over its patches, features="attention"
    keep_idx: torch.Tensor | None  # (b k) kept teacher-patch indices; None: every patch (or ToMe merging)
    num_kept: torch.Tensor  # (b,) patches the teacher saw per sample (fp32, for metrics)


FEATURES = (None, "tokens", "attention")


def check_scores(scores: torch.Tensor, b: int, grid: tuple[int, int], teacher_grid: tuple[int, int]) -> None:
    """Student scores are (b n): a row per sample of x, a score per patch of the student's grid (resampled onto the
    teacher's afterwards when the two differ). Static shapes only: no host sync."""
    want = (b, grid[0] * grid[1])
    if tuple(scores.shape) != want:
        whose, then = (("the teacher's", "") if grid == tuple(teacher_grid) else
                       ("the student's", f" (resampled onto the teacher's {tuple(teacher_grid)} afterwards)"))
        raise ValueError(f"scores of shape {tuple(scores.shape)}: expected {want}, a row per sample of x and a score "
                         f"for each of the {want[1]} patches of {whose} {grid} patch grid{then}")


@dataclass(frozen=True, eq=False)
class TeacherView:
    cfg: ViTConfig
    params: Params = field(repr=False)
    num_keep: int | None = None
    criterion: str = "topk"
    scorer: str | tuple[ViTConfig, Params] = "student"
    adaptive_mass: float = 0.0
    tome_r: int = 0
    schedule: tuple[int | None, ...] = ()
    score_grid: tuple[int, int] | None = None  # patch grid of the scores passed in; None: the teacher's

    def __post_init__(self):
        if not isinstance(self.cfg, ViTConfig):
            raise TypeError(f"cfg must be the teacher's ViTConfig, got {type(self.cfg).__name__}")
        n = self.cfg.num_patches
        within = f"[1, {n}]"

        def count(k, name):  # numpy integers are integers; the view holds Python ints (static shapes)
            return None if k is None else as_int(k, name, within, "the teacher's patches")
        if not isinstance(self.schedule, tuple):
            raise InputError(f"schedule={self.schedule!r} must be a tuple of kept counts per epoch (None: every "
                             f"patch); select.keep_schedule(spec, num_patches, epochs) makes one from a spec")
        object.__setattr__(self, "num_keep", count(self.num_keep, "num_keep"))
        object.__setattr__(self, "schedule", tuple(count(k, f"schedule[{e}]") for e, k in enumerate(self.schedule)))
        object.__setattr__(self, "adaptive_mass", as_number(self.adaptive_mass, "adaptive_mass", "[0, 1]",
                                                            "a share of the student's CLS attention; 0: off"))
        object.__setattr__(self, "tome_r", as_int(self.tome_r, "tome_r", "[0, inf)", "tokens merged per block; 0: off"))
        check_criterion(self.criterion)
        if not (isinstance(self.scorer, str) and self.scorer in ("student", "teacher")
                or (isinstance(self.scorer, tuple) and len(self.scorer) == 2 and isinstance(self.scorer[0], ViTConfig))):
            raise ValueError(f"scorer={self.scorer!r} must be 'student', 'teacher' or a (config, params) pair")
        check_params(self.params, self.cfg, "the teacher's params")
        if isinstance(self.scorer, tuple):
            check_params(self.scorer[1], self.scorer[0], "the scorer's params")
        if self.schedule and self.num_keep not in self.schedule:
            raise ValueError(f"num_keep={self.num_keep} is not one of the schedule's counts {self.schedule}")
        if self.tome_r:
            bad = {k: v for k, v in (("num_keep", self.num_keep), ("schedule", self.schedule),
                                     ("adaptive_mass", self.adaptive_mass), ("criterion", self.criterion),
                                     ("scorer", self.scorer)) if v != TeacherView.__dataclass_fields__[k].default}
            if bad:
                raise ValueError(f"tome_r={self.tome_r} merges tokens in the full teacher; it cannot combine with {bad}")
            from .tome import check_tome
            check_tome(self.cfg)
        if self.num_keep is None and not self.schedule and (self.criterion, self.scorer) != ("topk", "student"):
            raise ValueError(f"criterion={self.criterion!r} and scorer={self.scorer!r} choose patches to keep; with "
                             f"num_keep=None the teacher sees every patch")
        if self.adaptive_mass:
            if self.num_keep is None or self.schedule:
                raise ValueError(f"adaptive_mass={self.adaptive_mass} needs a fixed num_keep (the padded budget), "
                                 f"got num_keep={self.num_keep}, schedule={self.schedule}")
            if self.criterion != "topk" or self.scorer != "student":
                raise ValueError(f"adaptive_mass keeps the top patches of the student's attention; it cannot combine "
                                 f"with criterion={self.criterion!r}, scorer={self.scorer!r}")
            if self.score_grid is not None and tuple(self.score_grid) != self.cfg.grid_size:
                raise ValueError(f"adaptive_mass needs the student on the teacher's patch grid {self.cfg.grid_size}, "
                                 f"got {self.score_grid}")

    @property
    def mode(self) -> str:
        """"full", "mask", "adaptive" or "tome"."""
        return ("tome" if self.tome_r else "adaptive" if self.adaptive_mass else
                "full" if self.num_keep is None else "mask")

    def replace(self, **kw) -> "TeacherView":
        return dataclasses.replace(self, **kw)

    def at_epoch(self, epoch: int) -> "TeacherView":
        """The view of one epoch of a schedule (itself without one)."""
        if not self.schedule:
            return self
        if not 0 <= epoch < len(self.schedule):
            raise ValueError(f"epoch {epoch} is outside the schedule's {len(self.schedule)} epochs")
        return self.replace(num_keep=self.schedule[epoch])

    def for_student(self, student: ViTConfig) -> "TeacherView":
        """This view checked against the student whose scores it will get: class counts, score grid."""
        if student.num_classes != self.cfg.num_classes:
            raise ValueError(f"teacher has {self.cfg.num_classes} classes, student {student.num_classes}")
        return self.replace(score_grid=student.grid_size)

    def select(self, x: torch.Tensor, scores: torch.Tensor | None
               ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """(keep_idx (b k) or None, valid (b k) bool or None, num_kept (b,) fp32)."""
        b = x.shape[0]
        if self.num_keep is None or self.tome_r:
            return None, None, torch.full((b,), float(self.cfg.num_patches), device=x.device)
        if self.scorer == "teacher":
            scores, grid = student_forward(self.params, x, self.cfg)[1], self.cfg.grid_size
        elif isinstance(self.scorer, tuple):
            s_cfg, s_params = self.scorer
            scores, grid = student_forward(s_params, x, s_cfg)[1], s_cfg.grid_size
        else:
            if scores is None:
                raise ValueError("this view ranks patches by the student's scores: pass them")
            grid = tuple(self.score_grid or self.cfg.grid_size)
            check_scores(scores, b, grid, self.cfg.grid_size)
        if tuple(grid) != self.cfg.grid_size:
            scores = resample_scores(scores, grid, self.cfg.grid_size)
        if self.adaptive_mass:
            idx, valid, count = adaptive_budget(scores, self.adaptive_mass, self.num_keep)
            return idx, valid, count.float()
        spread = None
        if self.criterion in SPREAD_CRITERIA:  # each patch's pixel spread on the teacher's grid: no forward
            spread = patch_spread(patchify(to_image_layout(x, self.cfg), self.cfg.patch_size, self.cfg.patch_stride),
                                  self.cfg.in_chans)
        idx = select_tokens(scores, self.num_keep, self.criterion, spread=spread)
        return idx, None, torch.full((b,), float(self.num_keep), device=x.device)

    def __call__(self, x: torch.Tensor, scores: torch.Tensor | None = None, *, features: str | None = None
                 ) -> TeacherOut:
        """The teacher on what this view shows it. Runs as given: call it under torch.no_grad()."""
        if features not in FEATURES:
            raise ValueError(f"features={features!r} must be one of {FEATURES}")
        if self.tome_r:
            if features is not None:
                raise ValueError("a ToMe-merged teacher has no per-patch tokens to distil features from")
            from .tome import tome_forward
            logits = tome_forward(self.params, x, self.cfg, self.tome_r)
            return TeacherOut(logits, None, None, None,
                              torch.full((x.shape[0],), float(self.cfg.num_patches), device=x.device))
        keep, valid, kept = self.select(x, scores)
        if features is None and valid is None:  # the common path (CaiT and other families dispatch here)
            return TeacherOut(teacher_forward(self.params, x, self.cfg, keep, check=False), None, None, keep, kept)
        if features is not None and valid is not None:
            raise ValueError("feature distillation on a padded per-sample budget (adaptive_mass) is not supported")
        tokens, attn = forward_tokens(self.params, x, self.cfg, keep, check=False, keep_valid=valid,
                                      want_scores=features == "attention")
        return TeacherOut(head(self.params, tokens, self.cfg), tokens if features == "tokens" else None, attn,
                          keep, kept)
