"""A run's configuration: TrainConfig, its hash, its key=value and JSON forms, the models it names, and the registry
the recipes (digits.py, imagenet.py) add themselves to."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..config import ViTConfig, vit_config

# Models of the embedded cluttered-digits task (32x32, one channel, patch 4: 64 patches).
# Sizes from the project's early trials (not in this repository): the 0.8M teacher reached 85.7-93.1%, the 0.11M
# student ~76-80%.
MODELS: dict[str, ViTConfig] = {
    "digits_student": ViTConfig(name="digits_student", img_size=32, patch_size=4, in_chans=1, num_classes=10,
                                embed_dim=64, depth=3, num_heads=2, mlp_ratio=2.0),
    "digits_teacher": ViTConfig(name="digits_teacher", img_size=32, patch_size=4, in_chans=1, num_classes=10,
                                embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0),
    # a smaller student for the default regime's trials (reproduce/regime_trials.py)
    "digits_student_32": ViTConfig(name="digits_student_32", img_size=32, patch_size=4, in_chans=1, num_classes=10,
                                   embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0),
}


def _sounds_models():
    from ..ast import ast_config
    # AST students/teachers of the embedded sound set: 1.0 s clips, 100 frames x 128 bins -> 12 x 9 patches
    kw = dict(max_length=100, num_mel_bins=128, num_classes=10, norm_eps=1e-6)
    return {"sounds_student": ast_config(embed_dim=64, depth=3, num_heads=2, mlp_ratio=2.0, **kw).replace(
                name="sounds_student"),
            "sounds_teacher": ast_config(embed_dim=128, depth=4, num_heads=4, **kw).replace(name="sounds_teacher"),
            # ESC-50 at the AST recipe's 512 frames, 50 classes: the published base384 as teacher, tiny224 student
            "esc50_teacher": ast_config("base384", max_length=512, num_classes=50).replace(name="esc50_teacher"),
            "esc50_student": ast_config("tiny224", max_length=512, num_classes=50).replace(name="esc50_student")}


MODELS.update(_sounds_models())


def model_config(name: str, num_classes: int | None = None, img_size: int | None = None) -> ViTConfig:
    """A model by name: an embedded-task model above, or a timm-named preset (vit_config)."""
    cfg = MODELS[name] if name in MODELS else vit_config(name)
    kw = {}
    if num_classes is not None and num_classes != cfg.num_classes:
        kw["num_classes"] = num_classes
    if img_size is not None and (img_size, img_size) != cfg.img_size:
        kw["img_size"] = img_size
    return cfg.replace(**kw) if kw else cfg


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the official MaskedKD / DeiT recipe [docs/paper.md#recipe]; embedded-set configs
    override the sizes."""

    # data: "digits" (embedded cluttered digits), "imagefolder" (data_path/train, data_path/val),
    # "sounds" (embedded synthetic sound events) or "esc50" (data_path, test fold `fold`)
    data: str = "digits"
    fold: int = 1
    data_path: str = ""
    img_size: int = 0  # 0: the model's own
    train_size: int = 12000  # digits: images per epoch, fresh clutter each epoch
    test_size: int = 2000  # digits: fixed test images (disjoint source digits)
    clean_epochs: int = 0  # digits: first epochs on clean centred digits (teacher warm-up)
    fresh_clutter: bool = True  # digits: a new clutter draw every epoch (False: one fixed training set)
    # digits: the scene (data.images.cluttered_digits): digit size in px on the 32-px canvas, jitter px around the
    # centre, fragments of other digits, noise level. The defaults are the cluttered stress regime's.
    digit_size: int = 16
    copies: int = 1  # digits of the class in distinct cells of a digit_size grid (above 1: jitter 0)
    distractors: int = 0  # whole digits of one other class in further cells (fewer than copies)
    label_noise: float = 0.0  # digits, sounds: share of training labels replaced by another class (test set clean)
    jitter: int = 4
    num_clutter: int = 3
    noise: float = 0.15
    batch_aug: bool = False  # digits: DeiT's batch augmentation (MixUp 0.8 / CutMix 1.0 / smoothing 0.1, random
    #                          erasing 0.25 per image, as timm builds them), seeded by (seed, rank, epoch, step)
    mixup: bool = True  # imagefolder: MixUp 0.8 / CutMix 1.0 / smoothing 0.1
    # sounds, esc50: SpecAugment as AST trains (data.audio.SpecAugment): one frequency band of width uniform in
    # [0, freq_mask) bins and one time band in [0, time_mask) frames masked per training clip, seeded per step;
    # 0: off. AST's ESC-50 recipe: 24 and 96 (data.audio.ESC50_SPECAUG)
    freq_mask: int = 0
    time_mask: int = 0
    events: int = 1  # sounds: events of the class per clip, overlapping in time (data.audio.render_sound_event)
    repeated_aug: int = 3  # imagefolder: repeated-augmentation count
    num_workers: int = 8
    # student
    model: str = "deit_tiny_patch16_224"
    drop_path: float = 0.1
    init: str = ""  # the student's starting weights: "" (fresh, init_params) or a file for checkpoint.load_init
    init_required: bool = False  # the recipe fine-tunes a pre-trained file: refuse to start without init
    #                 (a pre-trained MAE encoder, G2SD's generic-distillation student: fresh head, fc_norm, ...)
    # teacher: "" (no distillation), a checkpoint path, or "cache:NAME" (an embedded teacher config, trained
    # once and cached; the committed artefact is used when it matches)
    teacher: str = ""
    teacher_model: str = ""
    num_keep: int = 0  # patches the teacher sees; 0: from keep_ratio
    keep_ratio: float = 1.0  # 1.0 with num_keep 0: vanilla (unmasked) KD
    keep_schedule: str = ""  # "A:B": kept percent grows linearly from A to B; "100*3,50": phases (select.keep_schedule)
    adaptive_mass: float = 0.0  # >0: per-sample budget reaching this share of CLS attention, at most num_keep
    teacher_tome_r: int = 0  # >0: no masking; the teacher merges this many tokens per block (ToMe ablation)
    criterion: str = "topk"
    # whose CLS attention ranks the patches: "student" (MaskedKD), "teacher" (its own attention, an extra pass),
    # or a fixed model: "cache:NAME" (an embedded config, trained once) or a checkpoint path with scorer_model
    scorer: str = "student"
    scorer_model: str = ""
    student_keep: int = 0  # >0: the opposite ablation, the student trains on this many random patches
    kd_weight: float = 0.5
    temperature: float = 1.0
    kd_kind: str = "soft"  # soft | hard | manifold | attention (feature terms on the kept patches)
    feature_weight: float = 1.0
    kl_reduction: str = "batchmean"
    # optimisation
    epochs: int = 300
    batch_size: int = 1024  # global, over all processes
    lr: float = 5e-4  # per 512 images: lr = lr * batch_size / 512
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    layer_decay: float = 0.0  # >0: MAE's layer-wise lr decay (optim.param_groups); 0: off (DeiT)
    seed: int = 0
    compile: bool = True
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; bf16: autocast everywhere; fp32: none
    threads: int = 0  # torch threads per process; 0: leave torch's default
    # bookkeeping
    out_dir: str = ""  # default runs/NAME
    resume: bool = False  # continue out_dir/checkpoint.pt
    overwrite: bool = False  # start over in an out_dir that holds a checkpoint (without resume or this: refused)
    ckpt_every: int = 0  # steps between checkpoints; 0: end of each epoch only
    log_every: int = 20
    max_steps: int = 0  # stop after this many steps in total (smoke runs); 0: no limit
    eval_masked_teacher: bool = True  # also log the teacher's accuracy on the student-selected test patches
    eval_every: int = 1  # epochs between evaluations; the last epoch is always evaluated
    eval_teacher_every: int = 1  # epochs between masked-teacher evaluations (at evaluation epochs, and the last)
    name: str = "run"

    def __post_init__(self):
        for key, interval, ok, meaning in RATIOS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v):
                raise ValueError(f"{key}={v!r} must lie in {interval} ({meaning})")
        for key, kinds in DATA_ONLY.items():
            if self.data not in kinds and getattr(self, key) != _DEFAULTS[key]:
                raise ValueError(f"{key}={getattr(self, key)!r} applies to data {' / '.join(kinds)} only, not "
                                 f"data={self.data!r}, where it would be ignored")
        for key in ("freq_mask", "time_mask"):
            if isinstance(getattr(self, key), bool) or getattr(self, key) < 0:
                raise ValueError(f"{key}={getattr(self, key)!r} must be an int >= 0 (a SpecAugment band's widest "
                                 f"width; 0: off)")
        if isinstance(self.events, bool) or not isinstance(self.events, int) or self.events < 1:
            raise ValueError(f"events={self.events!r} must be an int >= 1 (events of the class per sound clip)")
        if self.resume and self.overwrite:
            raise ValueError("resume=true and overwrite=true contradict each other: resume continues the checkpoint "
                             "in out_dir, overwrite starts over")

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


# Fractions and rates, checked when a config is made (before any data or model): (field, interval, test, meaning).
# Further on, a value out of range is clamped, ignored or turns into NaN (keep_ratio=1.7 would train plain logit KD).
RATIOS = (
    ("keep_ratio", "(0, 1]", lambda v: 0 < v <= 1, "the teacher's share of the patches; 1.0: all, plain logit KD"),
    ("kd_weight", "[0, 1]", lambda v: 0 <= v <= 1, "the distillation term's share of the loss"),
    ("label_noise", "[0, 1)", lambda v: 0 <= v < 1, "the share of training labels replaced by another class"),
    ("adaptive_mass", "[0, 1]", lambda v: 0 <= v <= 1, "a share of the student's CLS attention; 0: off"),
    ("drop_path", "[0, 1)", lambda v: 0 <= v < 1, "the stochastic-depth rate of the last block"),
    ("layer_decay", "[0, 1]", lambda v: 0 <= v <= 1, "the lr ratio of a block to the one above it; 0: off"),
    ("temperature", "(0, inf)", lambda v: 0 < v < math.inf, "the distillation softmax temperature"),
)

# Fields that one data source reads and the others would ignore: a value other than the default with another data
# source is refused (a digit-scene option on the sound set, SpecAugment on images).
DIGITS = ("digits",)
DATA_ONLY = {**{k: DIGITS for k in ("clean_epochs", "fresh_clutter", "digit_size", "copies", "distractors", "jitter",
                                    "num_clutter", "noise", "batch_aug")},
             "label_noise": ("digits", "sounds"), "freq_mask": ("sounds", "esc50"), "time_mask": ("sounds", "esc50"),
             "events": ("sounds",),
             "fold": ("esc50",), "mixup": ("imagefolder",), "repeated_aug": ("imagefolder",)}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

# TrainConfig fields that do not change the trained weights
NOT_HASHED = frozenset({"out_dir", "resume", "overwrite", "ckpt_every", "log_every", "threads", "num_workers",
                        "compile", "eval_masked_teacher", "eval_every", "eval_teacher_every", "data_path",
                        "init_required"})


def config_hash(cfg: TrainConfig) -> str:
    """Hash of everything that changes the trained weights (not paths, logging or threads): names a run's directory
    and a cached teacher. Only fields that differ from TrainConfig's defaults enter it, so adding a new field (with
    a default) keeps old hashes valid."""
    base = dataclasses.asdict(TrainConfig())
    d = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_HASHED and v != base[k]}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _coerce(field, text: str):
    t = field.type if isinstance(field.type, str) else field.type.__name__
    if t == "bool":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{field.name}={text!r}: expected true/false")
        return text.lower() in ("true", "1", "yes")
    try:
        return {"int": int, "float": float}.get(t, str)(text)
    except ValueError:
        raise ValueError(f"{field.name}={text!r}: expected {'an integer' if t == 'int' else 'a number'}") from None


def apply_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """key=value strings -> a new config; unknown keys raise ValueError listing the valid ones."""
    by_name = {f.name: f for f in fields(TrainConfig)}
    kw = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"override {it!r} is not key=value")
        k, v = it.split("=", 1)
        if k not in by_name:
            raise ValueError(f"unknown config key {k!r}; valid keys: {sorted(by_name)}")
        kw[k] = _coerce(by_name[k], v)
    return cfg.replace(**kw)


def config_from_json(path: str | Path) -> TrainConfig:
    """A config written as JSON, every field by name (a run's launch file, or its out_dir/config.json): fields this
    version does not know raise."""
    rec = json.loads(Path(path).read_text())
    unknown = sorted(set(rec) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"{path}: unknown config fields {unknown}")
    return TrainConfig(**rec)


def write_config(cfg: TrainConfig, path: str | Path) -> Path:
    """cfg as JSON at path (atomically), for `python -m maskedkd.train PATH`; config_from_json reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    os.replace(tmp, path)
    return path


def config_diff(recorded: dict, cfg: TrainConfig, ignore=NOT_HASHED) -> dict:
    """{field: (recorded, now)} for the fields outside `ignore` where a recorded config (a dict, as written by
    write_config or a checkpoint) trains other weights than cfg. Compared by value (a recorded 1.0 equals a declared
    1), not by hash; recorded fields this version no longer has are left out."""
    known = {f.name for f in fields(TrainConfig)}
    ran = TrainConfig(**{k: v for k, v in recorded.items() if k in known})
    return {f.name: (getattr(ran, f.name), getattr(cfg, f.name)) for f in fields(cfg)
            if f.name not in ignore and getattr(ran, f.name) != getattr(cfg, f.name)}


CONFIGS: dict[str, TrainConfig] = {}
DOCS: dict[str, str] = {}  # per config: the command, the expected result, the paper table


def register(cfg: TrainConfig, doc: str = "") -> TrainConfig:
    """Make cfg runnable by its name; doc states its command, expected result and paper table."""
    CONFIGS[cfg.name] = cfg
    DOCS[cfg.name] = doc
    return cfg
