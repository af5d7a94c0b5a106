"""Where a run's teacher comes from, and the view it is seen through.

A teacher (or a fixed scorer model) is a model named on a hub ("timm:NAME", "hf-hub:REPO": maskedkd.hub, read through
timm's and huggingface_hub's own cache, its config from the model), a checkpoint file with its preset name, or
"cache:NAME": an embedded
experiment trained once by the training program and cached by its config hash (the committed artefact in
maskedkd/assets is used when its recorded hash matches). This module only reads teachers; producing a missing cached
one is the training program's job (maskedkd.train.train_cached_teacher). `teacher_view(cfg, ...)` turns a
TrainConfig's teacher fields into the TeacherView they describe; maskedkd.train.run_view finishes it for a run.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_checkpoint, read_state_dict
from .data.cache import cache_dir
from .hub import is_hub_name, load_pretrained
from .experiments import TrainConfig, config_hash, get_config, model_config
from .select import keep_count, keep_schedule
from .view import TeacherView

ASSETS = Path(__file__).parent / "assets"


def cached_teacher(tcfg: TrainConfig) -> Path:
    """Path of an embedded teacher's weights: the committed artefact if its config hash matches, else the cache
    entry (cache_dir()/teachers/NAME-HASH.safetensors). Reads only: a teacher not trained yet raises; the training
    program trains and caches it (maskedkd.train.train_cached_teacher, which `python -m maskedkd.train` calls for a
    run's cache:NAME teacher or scorer)."""
    h = config_hash(tcfg)
    shipped = ASSETS / f"{tcfg.name}.safetensors"
    if shipped.is_file():
        from safetensors import safe_open
        with safe_open(str(shipped), "pt") as f:
            if (f.metadata() or {}).get("config_hash") == h:
                return shipped
    path = cache_path(tcfg)
    if not path.is_file():
        raise FileNotFoundError(f"teacher cache:{tcfg.name} is not trained yet ({path} is missing): a training run "
                                f"that names it trains it first, or maskedkd.train.train_cached_teacher(config)")
    return path


def cache_path(tcfg: TrainConfig) -> Path:
    """Where the cache keeps an embedded teacher's weights: named by its config hash."""
    return cache_dir() / "teachers" / f"{tcfg.name}-{config_hash(tcfg)}.safetensors"


def load_model(ref: str, model: str, num_classes: int, img_size: int | None, device: torch.device, role: str,
               data: str = "digits"):
    """(config, params, input normalisation or None) of a model given as "cache:NAME", as a hub name ("timm:NAME",
    "hf-hub:REPO": maskedkd.hub, its config from the model itself) or as a checkpoint path with its preset name
    `model`; its class count must match the data's. The normalisation is the model's own where the hub says it, else
    the family's (input_norm) for ImageFolder data, else None."""
    if is_hub_name(ref):
        pre = load_pretrained(ref, img_size=img_size)
        if model and pre.cfg.replace(name=model) != model_config(model, pre.cfg.num_classes, img_size):
            want = model_config(model, pre.cfg.num_classes, img_size)
            diff = {f: (getattr(pre.cfg, f), getattr(want, f)) for f in want.__dataclass_fields__
                    if f != "name" and getattr(pre.cfg, f) != getattr(want, f)}
            raise ValueError(f"{role}={ref} is not the {role}_model={model!r} the config names (field: (hub model, "
                             f"{model})) {diff}: drop {role}_model or name the matching model")
        if pre.cfg.num_classes != num_classes:
            raise ValueError(f"{role} {ref} has {pre.cfg.num_classes} classes but the data has {num_classes}")
        return pre.cfg, {k: v.to(device) for k, v in pre.params.items()}, pre.norm
    cached = ref.startswith("cache:")
    if cached:
        mcfg = get_config(ref[len("cache:"):])
        if model and model != mcfg.model:
            raise ValueError(f"{role}_model={model!r}, but {role}={ref} trains model {mcfg.model!r}: drop "
                             f"{role}_model or make it {mcfg.model!r}")
        path = cached_teacher(mcfg)
        arch = model_config(mcfg.model, num_classes)
    else:
        path = ref
        arch = model_config(model, num_classes, img_size)
    sd = read_state_dict(path)
    head = sd.get("head.weight")
    if head is not None and head.shape[0] != num_classes:
        raise ValueError(f"{role} {path} has {head.shape[0]} classes but the data has {num_classes}")
    try:
        params = load_checkpoint(sd, arch, source=str(path))
    except ValueError as e:
        if not cached:
            raise
        raise ValueError(f"{e}. The cached {role} {path} was made for another architecture than {ref}'s "
                         f"{arch.name!r}: delete that file and it is trained again") from None
    return arch, {k: v.to(device) for k, v in params.items()}, input_norm(arch) if data == "imagefolder" else None


# Input normalisation a model family was trained with, where it is not ImageNet's (timm's data configs): the
# CLIP image towers expect OpenAI's mean/std (timm OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def input_norm(model_cfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return CLIP_NORM if model_cfg.name.startswith("vit_base_patch16_clip") else IMAGENET_NORM


def data_norm(data: str):
    """((mean per channel), (std per channel)) a data source normalises its inputs with, where a teacher trained with
    another one can be adapted to it (fold_input_norm): ImageFolder (timm's DeiT transforms: ImageNet's), and the
    sound sets (fbank (x - mean) / (2 std), AST's convention); None for the embedded digits."""
    from .data.audio import ESC50_MEAN, ESC50_STD
    from .data.sounds import SYNTH_MEAN, SYNTH_STD
    return {"imagefolder": IMAGENET_NORM, "sounds": ((SYNTH_MEAN,), (2 * SYNTH_STD,)),
            "esc50": ((ESC50_MEAN,), (2 * ESC50_STD,))}.get(data)


def fold_input_norm(params: dict, data_norm, model_norm) -> dict:
    """Parameters that map inputs normalised with data_norm as the model expects model_norm: the per-channel
    affine x_m = x_d * s_d / s_m + (m_d - m_m) / s_m is folded into the (linear, unpadded) patch embedding, so a CLIP
    teacher reads the ImageNet-normalised batch the student reads, with no extra pass over the images."""
    (m_d, s_d), (m_m, s_m) = (tuple(torch.tensor(v, dtype=torch.float64) for v in n) for n in (data_norm, model_norm))
    if torch.equal(m_d, m_m) and torch.equal(s_d, s_m):
        return params
    w = params["patch_embed.proj.weight"]
    scale, shift = (s_d / s_m).to(w), ((m_d - m_m) / s_m).to(w)
    bias = params.get("patch_embed.proj.bias", torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
    return {**params, "patch_embed.proj.weight": w * scale[None, :, None, None],
            "patch_embed.proj.bias": bias + torch.einsum("d c p q, c -> d", w, shift)}


def kept_per_epoch(cfg: TrainConfig, num_patches: int) -> tuple[int | None, ...]:
    """The teacher's kept patches in each epoch of a run (None: every patch): num_keep, keep_ratio (by keep_count) or
    keep_schedule, at most one of them. The view of the training program and the cost ledger (run_macs below) read
    the kept count from here alone."""
    if cfg.keep_schedule:  # TrainConfig gives at most one of the three (experiments.core.check_combinations)
        return keep_schedule(cfg.keep_schedule, num_patches, cfg.epochs)
    k = cfg.num_keep or (keep_count(num_patches, cfg.keep_ratio) if cfg.keep_ratio < 1.0 else None)
    return (k,) * cfg.epochs


def run_macs(cfg: TrainConfig) -> dict[str, float]:
    """MACs per training image of a run, averaged over its epochs, in the paper's FLOPs model (1 MAC = 1 FLOP,
    backward = 2 forwards) [docs/paper.md#flops-model]: `student` forward + backward (on student_keep patches when the
    student is
    the masked one), `teacher` forward (masked, following keep_schedule, ToMe-merged, or full; an adaptive budget is
    charged its padded size, which a static-shape step computes), and `scorer`, the extra pass of a teacher or a
    fixed model that ranks the patches (0 when the student's own attention does)."""
    from .flops import macs
    from .tome import tome_macs
    out = {"student": 3.0 * macs(model_config(cfg.model), cfg.student_keep or None), "teacher": 0.0, "scorer": 0.0}
    if not cfg.teacher:
        return out
    t = model_config(cfg.teacher_model)
    if cfg.teacher_tome_r:
        out["teacher"] = float(tome_macs(t, cfg.teacher_tome_r))
    else:
        out["teacher"] = sum(macs(t, k) for k in kept_per_epoch(cfg, t.num_patches)) / cfg.epochs
    if cfg.scorer == "teacher":
        out["scorer"] = float(macs(t))
    elif cfg.scorer != "student":
        name = get_config(cfg.scorer[len("cache:"):]).model if cfg.scorer.startswith("cache:") else cfg.scorer_model
        out["scorer"] = float(macs(model_config(name)))
    return out


def teacher_view(cfg: TrainConfig, num_classes: int, device: torch.device) -> TeacherView | None:
    """The TeacherView of a run (None: no distillation): the kept count from num_keep or keep_ratio (keep_count),
    or per epoch from keep_schedule; criterion, scorer, adaptive budget or ToMe merging as configured."""
    if not cfg.teacher:  # options that describe one without it: refused by experiments.check_runnable (run)
        return None
    img, norm = cfg.img_size or None, data_norm(cfg.data)
    t_cfg, params, t_norm = load_model(cfg.teacher, cfg.teacher_model, num_classes, img, device, "teacher", cfg.data)
    if norm is not None and t_norm is not None:  # the teacher reads the batch normalised as the student does
        params = fold_input_norm(params, norm, t_norm)
    per_epoch = kept_per_epoch(cfg, t_cfg.num_patches)
    num_keep, schedule = (per_epoch[0] if per_epoch else None), (per_epoch if cfg.keep_schedule else ())
    scorer = cfg.scorer
    if scorer not in ("student", "teacher"):
        s_cfg, s_params, s_norm = load_model(cfg.scorer, cfg.scorer_model, num_classes, img, device, "scorer",
                                             cfg.data)
        if norm is not None and s_norm is not None:
            s_params = fold_input_norm(s_params, norm, s_norm)
        scorer = (s_cfg, s_params)
    return TeacherView(t_cfg, params, num_keep, criterion=cfg.criterion, scorer=scorer,
                       adaptive_mass=cfg.adaptive_mass, tome_r=cfg.teacher_tome_r, schedule=schedule)
