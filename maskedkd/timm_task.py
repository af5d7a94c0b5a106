"""MaskedKD as a timm training task: `LogitDistillationTask` whose teacher sees only the patches the student attends to.

`MaskedLogitDistillationTask` takes timm's `LogitDistillationTask` arguments plus `num_keep` (or `keep_ratio`) and
`mask_criterion` (timm's `criterion` is already the task loss). The student runs through the functional core on its
own Parameters (`config_from_timm`, `mkd.student_forward`: logits and the last block's CLS attention); the teacher is
`mkd.TeacherView(teacher_cfg, dict(teacher.named_parameters()), num_keep, criterion=mask_criterion)`: selection and
the masked teacher forward, the one teacher path of the project. No second implementation lives here.

Loss, as timm's: `task_loss_weight * criterion(s, y) + distill_loss_weight * T^2 KL(p_T || p_S)` (KL summed over
classes, batch mean: `mkd.kd_divergence`). The project's `kd_loss(s, t, y, kd_weight=a, temperature=T)` =
`(1 - a) CE + a T^2 KL` is this task with `task_loss_weight=1 - a` alone (timm's complementary mode) and a plain
cross-entropy criterion; timm's default (both weights 1) is twice kd_loss at a = 0.5. The official MaskedKD / DeiT
setting is `task_loss_weight=0.5`.

The teacher gets the input re-normalised to its own mean / std when they differ from the student's, with timm's formula
(`DistillationTeacher.normalize_input`), decided once at construction instead of a `torch.equal` per batch (a host
sync on GPU). Output: timm's dict (`loss`, `output`, `task_loss`, `kd_loss`) plus `kept_tokens` (patches the teacher
saw, batch mean); every value a tensor, no host sync. `prepare_distributed` wraps the student in DDP as timm's does
(the trainable module is `StudentWithScores`, whose forward is the functional student); `compile()` compiles the
student's train forward, its eval forward and the masked teacher; `torch.compile(task)` works as well.

Example: distil a DeiT-S into a DeiT-Ti, the teacher on 50% of the patches (98 of 196)::

    import timm, torch
    from maskedkd.timm_task import MaskedLogitDistillationTask
    student = timm.create_model("deit_tiny_patch16_224", num_classes=1000, drop_path_rate=0.1)
    teacher = timm.create_model("deit_small_patch16_224")                         # any nn.Module; weights from
    teacher.load_state_dict(torch.load("deit_small.pth", weights_only=True))     # a local file, never a download
    task = MaskedLogitDistillationTask(student, teacher, keep_ratio=0.5, task_loss_weight=0.5)
    optimizer = torch.optim.AdamW(task.get_trainable_module().parameters(), lr=5e-4, weight_decay=0.05)
    task.compile()                                         # optional, as timm's; prepare_distributed(...) for DDP
    for x, y in loader:                                    # x normalised for the student
        out = task(x, y)                                   # loss, output, task_loss, kd_loss, kept_tokens
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn
from timm.task import DistillationTeacher, LogitDistillationTask
from timm.utils import unwrap_model

from .config import ViTConfig
from .from_timm import config_from_timm, drop_path_from_timm, params_from_timm
from .losses import kd_divergence
from .model import forward, student_forward
from .select import keep_count
from .view import TeacherOut, TeacherView


def _register_einops_types() -> None:
    """einops caches its backend per tensor type; a type first met inside a compiled call (nn.Parameter: the patch
    filters) fails a guard and recompiles the whole forward once. Registering both types first avoids that."""
    from einops import rearrange
    for t in (torch.zeros(1), nn.Parameter(torch.zeros(1))):
        rearrange(t, "a -> a")


class StudentWithScores(nn.Module):
    """The trainable module: a timm student run by the functional core on its own Parameters.
    forward(x (b c h w)) -> (logits (b C), last-block CLS scores (b n) or None when no scores are wanted);
    drop path at the module's own rate in train mode (`drop_path_from_timm`). The Parameters are looked up once (and
    again after .to() / .cuda()), as DDP and the optimizer hold them: replacing a Parameter object needs a new task."""

    def __init__(self, student: nn.Module, cfg: ViTConfig, *, want_scores: bool = True):
        super().__init__()
        self.student = student
        self.cfg = cfg
        self.want_scores = want_scores
        self.drop_path = drop_path_from_timm(student, cfg)
        self._params = params_from_timm(student)

    def _apply(self, fn, *args, **kwargs):
        result = super()._apply(fn, *args, **kwargs)
        self._params = params_from_timm(self.student)
        return result

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        params = self._params
        drop = self.drop_path if self.training else 0.0
        if self.want_scores:
            return student_forward(params, x, self.cfg, drop_path=drop)
        return forward(params, x, self.cfg, drop_path=drop), None

    def no_weight_decay(self):
        student = unwrap_model(self.student)
        return {"student." + n for n in student.no_weight_decay()} if hasattr(student, "no_weight_decay") else set()

    def group_matcher(self, coarse: bool = False):
        from timm.models import group_parameters
        student = unwrap_model(self.student)
        if not hasattr(student, "group_matcher"):
            return {}
        layer_map = group_parameters(student, student.group_matcher(coarse=coarse), reverse=True)
        last = max(layer_map.values(), default=0)
        return lambda name: layer_map.get(name[len("student."):], last) if name.startswith("student.") else last


class MaskedLogitDistillationTask(LogitDistillationTask):
    """timm's logit distillation with MaskedKD's masked teacher (arXiv 2302.10494): the student's last-block CLS
    attention ranks the patches and the teacher sees its prefix tokens plus the top `num_keep` (`keep_ratio`: the
    project's `keep_count` of the teacher's patches). num_keep=None: every patch, equal to LogitDistillationTask.
    mask_criterion: "topk" (MaskedKD), "bottomk", "random" or a `register_criterion` plug-in. Student and teacher:
    timm ViT / DeiT / DeiT-III / CLIP / CaiT modules (`config_from_timm`); other arguments as LogitDistillationTask."""

    def __init__(
            self,
            student_model: nn.Module,
            teacher_model: Union[str, nn.Module, DistillationTeacher],
            criterion: Optional[nn.Module] = None,
            criterion_kwargs: Optional[Dict[str, Any]] = None,
            teacher_pretrained_path: Optional[str] = None,
            teacher_pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
            loss_type: str = "kl",
            distill_loss_weight: Optional[float] = None,
            task_loss_weight: Optional[float] = None,
            temperature: float = 1.0,
            num_keep: Optional[int] = None,
            keep_ratio: Optional[float] = None,
            mask_criterion: str = "topk",
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            verbose: bool = True,
    ):
        super().__init__(student_model, teacher_model, criterion=criterion, criterion_kwargs=criterion_kwargs,
                         teacher_pretrained_path=teacher_pretrained_path,
                         teacher_pretrained_cfg_overlay=teacher_pretrained_cfg_overlay, loss_type=loss_type,
                         distill_loss_weight=distill_loss_weight, task_loss_weight=task_loss_weight,
                         temperature=temperature, device=device, dtype=dtype, verbose=verbose)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature!r} must be > 0")
        self.student_cfg = config_from_timm(student_model)
        self.teacher_cfg = config_from_timm(self.teacher.model)
        s, t = self.student_cfg, self.teacher_cfg
        if (s.img_size, s.in_chans) != (t.img_size, t.in_chans):
            raise ValueError(f"student input {s.in_chans}x{s.img_size} and teacher input {t.in_chans}x{t.img_size} "
                             f"differ: both see the same batch")
        if keep_ratio is not None:
            if num_keep is not None:
                raise ValueError(f"give num_keep={num_keep} or keep_ratio={keep_ratio}, not both")
            num_keep = keep_count(t.num_patches, keep_ratio)
        if num_keep == t.num_patches:
            num_keep = None  # every patch: the plain teacher forward
        self._view = TeacherView(t, params_from_timm(self.teacher.model), num_keep,
                                 criterion=mask_criterion).for_student(s)
        self.num_keep = num_keep
        self.trainable_module = StudentWithScores(student_model, s, want_scores=num_keep is not None)
        self._same_norm = bool(torch.equal(self.student_mean.cpu(), self.teacher.mean_kd.cpu())
                               and torch.equal(self.student_std.cpu(), self.teacher.std_kd.cpu()))
        self._teacher_fn = self._masked_teacher
        _register_einops_types()

    @property
    def view(self) -> TeacherView:
        """What the teacher sees (mkd.TeacherView over the teacher module's own Parameters)."""
        return self._view

    def _apply(self, fn, *args, **kwargs):
        """After .to() / .cuda() / .half(): the view reads the teacher's Parameters as they are now."""
        result = super()._apply(fn, *args, **kwargs)
        if "_view" in self.__dict__:
            self._view = self._view.replace(params=params_from_timm(self.teacher.model))
        return result

    def _masked_teacher(self, input: torch.Tensor, scores: Optional[torch.Tensor]) -> TeacherOut:
        """The teacher on its view of the batch: input re-normalised as timm's normalize_input, then TeacherView."""
        if not self._same_norm:
            input = (input * self.student_std + self.student_mean - self.teacher.mean_kd) / self.teacher.std_kd
        return self._view(input, scores)

    def compile(self, backend: str = "inductor", mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """Compile the student's train forward (scores included), its eval forward and the masked teacher."""
        self.eval_model = torch.compile(self.get_eval_model(), backend=backend, mode=mode, **compile_kwargs)
        self.trainable_module = torch.compile(self.trainable_module, backend=backend, mode=mode, **compile_kwargs)
        self._teacher_fn = torch.compile(self._masked_teacher, backend=backend, mode=mode, **compile_kwargs)
        return self.eval_model

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        """The timm student itself (through DDP / compile / EMA wrappers): validation and checkpoints use its
        own forward and its timm state dict."""
        current = super().get_eval_model(module=module, ema=ema)
        resolved = current
        while current is not None:
            if isinstance(current, StudentWithScores):
                return current.student
            current = getattr(current, "module", None) or getattr(current, "_orig_mod", None)
        return resolved

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        """input (b c h w) normalised for the student, target (b,) or (b C) -> {loss, output, task_loss, kd_loss,
        kept_tokens}, as LogitDistillationTask's plus the patches the teacher saw (batch mean)."""
        student_logits, scores = self.trainable_module(input)
        task_loss = self.criterion(student_logits, target)
        with torch.no_grad():
            t = self._teacher_fn(input.detach(), None if scores is None else scores.detach())
        kd_loss = kd_divergence(student_logits, t.logits, temperature=self.temperature)
        total_loss = self.task_loss_weight * task_loss + self.distill_loss_weight * kd_loss
        return {"loss": total_loss, "output": student_logits, "task_loss": task_loss, "kd_loss": kd_loss,
                "kept_tokens": t.num_kept.mean()}
