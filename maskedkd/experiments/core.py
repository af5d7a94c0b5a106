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

from .. import checks
from ..config import ViTConfig, vit_config

# Models of the embedded digit scenes (32x32, one channel, patch 4: 64 patches): a 0.8M-parameter teacher and a
# 0.11M student. The sizes were fixed by hand before the trial logs existed; how each regime's teacher and students
# score is in reproduce/reference/regime_trials.jsonl and reproduce/reference/cluttered/.
MODELS: dict[str, ViTConfig] = {
    "digits_student": ViTConfig(name="digits_student", img_size=32, patch_size=4, in_chans=1, num_classes=10,
                                embed_dim=64, depth=3, num_heads=2, mlp_ratio=2.0),
    "digits_teacher": ViTConfig(name="digits_teacher", img_size=32, patch_size=4, in_chans=1, num_classes=10,
                                embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0),
    # a smaller student for the default regime's trials (reproduce/regime_trials.py)
    "digits_student_32": ViTConfig(name="digits_student_32", img_size=32, patch_size=4, in_chans=1, num_classes=10,
                                   embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0),
    # a deeper student for the second round of trials: twice the blocks, so that the teacher costs 3.4 times the
    # student (the paper's DeiT-S / DeiT-Ti: 3.7, docs/paper.md#flops-model)
    "digits_student_d6": ViTConfig(name="digits_student_d6", img_size=32, patch_size=4, in_chans=1, num_classes=10,
                                   embed_dim=64, depth=6, num_heads=2, mlp_ratio=2.0),
    # the registered student with 4 register tokens (Darcet et al., ICLR 2024), for the third round of trials: tokens
    # where a ViT can keep its global computation instead of on patches it then attends to regardless of content
    "digits_student_reg4": ViTConfig(name="digits_student_reg4", img_size=32, patch_size=4, in_chans=1,
                                     num_classes=10, embed_dim=64, depth=3, num_heads=2, mlp_ratio=2.0,
                                     num_prefix_tokens=5, reg_tokens=4),
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


def opt(default, within=None, meaning: str = ""):
    """A TrainConfig field: its default, the interval ("[1, inf)") or choices (a tuple) it takes, and what it means.
    Text fields without choices take any text; `within` may then be a function `value -> error or None`."""
    return dataclasses.field(default=default, metadata={"within": within, "meaning": meaning})


def _run_name(v: str):
    return None if v and "/" not in v else "must be a non-empty name without '/' (runs/NAME is its folder)"


_run_name.takes = "a name without '/'"


def _known_model(optional: bool):
    """A text field's check: a model of MODELS or a preset (config.PRESETS, MAE_PRESETS); '' too where optional."""
    def check(v: str):
        if optional and not v:
            return None
        from ..config import MAE_PRESETS, PRESETS
        known = set(MODELS) | set(PRESETS) | set(MAE_PRESETS)
        return None if v in known else f"is not a known model; known models: {sorted(known)}"
    check.takes = "a known model" + (", or ''" if optional else "")
    return check


DATA_SOURCES = ("digits", "imagefolder", "sounds", "esc50")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the official MaskedKD / DeiT recipe [docs/paper.md#recipe]; embedded-set configs
    override the sizes. Every field declares its kind (its annotation) and the interval or choices it takes (`opt`):
    a value outside them is refused at construction, naming the key and the value (maskedkd.checks), and options
    that cannot combine are refused in one place (check_combinations)."""

    # data: "digits" (embedded digit scenes), "imagefolder" (data_path/train, data_path/val),
    # "sounds" (embedded synthetic sound events) or "esc50" (data_path, test fold `fold`)
    data: str = opt("digits", DATA_SOURCES, "the data source")
    fold: int = opt(1, "[1, 5]", "ESC-50's test fold")
    data_path: str = opt("", None, "imagefolder: the folder with train/ and val/; esc50: the ESC-50 folder")
    img_size: int = opt(0, "[0, inf)", "the input size in px; 0: the model's own")
    train_size: int = opt(12000, "[1, inf)", "digits: images per epoch; sounds: training clips")
    test_size: int = opt(2000, "[1, inf)", "digits: fixed test images (disjoint source digits); sounds: test clips")
    clean_epochs: int = opt(0, "[0, inf)", "digits: first epochs on clean centred digits (teacher warm-up)")
    fresh_clutter: bool = opt(True, None, "digits: a new clutter draw every epoch (false: one fixed training set)")
    # digits: the scene (data.images.cluttered_digits): digit size in px on the 32-px canvas, jitter px around the
    # centre, fragments of other digits, noise level. The defaults are the cluttered stress regime's.
    digit_size: int = opt(16, "[8, 32]", "digits: digit size in px on the 32-px canvas")
    copies: int = opt(1, "[1, inf)", "digits: digits of the class in distinct cells of a digit_size grid")
    distractors: int = opt(0, "[0, inf)", "digits: whole digits of one other class in further cells")
    label_noise: float = opt(0.0, "[0, 1)", "digits, sounds: share of training labels replaced by another class")
    jitter: int = opt(4, "[0, inf)", "digits: px the digit moves around the centre")
    num_clutter: int = opt(3, "[0, inf)", "digits: fragments of other digits per image")
    noise: float = opt(0.15, "[0, 1]", "digits: uniform pixel noise level")
    texture: float = opt(0.0, "[0, 1]", "digits: amplitude of a smooth random background (0: none)")
    # digits: DeiT's batch augmentation (MixUp 0.8 / CutMix 1.0 / smoothing 0.1, random erasing 0.25 per image, as
    # timm builds them), seeded by (seed, rank, epoch, step)
    batch_aug: bool = opt(False, None, "digits: DeiT's batch augmentation")
    # digits: each training image moved by up to `shift` px per sample and step (data.images.random_shift: RandomCrop
    # with padding, CIFAR's spatial augmentation), before batch_aug; the test images stay where they are
    shift: int = opt(0, "[0, 8]", "digits: training images moved by up to this many px (0: off)")
    mixup: bool = opt(True, None, "imagefolder: MixUp 0.8 / CutMix 1.0 / smoothing 0.1")
    device_aug: bool = opt(False, None, "imagefolder: workers send uint8 images; normalisation and random erasing run "
                                        "on the device (timm's prefetcher path)")
    device_randaug: bool = opt(False, None, "imagefolder, with device_aug: RandAugment runs on the device too "
                                            "(data.device_ops); the workers crop and flip")
    # sounds, esc50: SpecAugment as AST trains (data.audio.SpecAugment): one frequency band of width uniform in
    # [0, freq_mask) bins and one time band in [0, time_mask) frames masked per training clip, seeded per step;
    # 0: off. AST's ESC-50 recipe: 24 and 96 (data.audio.ESC50_SPECAUG)
    freq_mask: int = opt(0, "[0, inf)", "a SpecAugment frequency band's widest width in bins; 0: off")
    time_mask: int = opt(0, "[0, inf)", "a SpecAugment time band's widest width in frames; 0: off")
    events: int = opt(1, "[1, inf)", "sounds: events of the class per clip (data.audio.render_sound_event)")
    repeated_aug: int = opt(3, "[1, inf)", "imagefolder: repeated-augmentation count")
    num_workers: int = opt(8, "[0, inf)", "DataLoader worker processes")
    # student
    model: str = opt("deit_tiny_patch16_224", _known_model(False), "the student model")
    drop_path: float = opt(0.1, "[0, 1)", "the stochastic-depth rate of the last block")
    init: str = opt("", None, "the student's starting weights: '' (fresh) or a file for checkpoint.load_init")
    # the recipe fine-tunes a pre-trained file: refuse to start without init (a pre-trained MAE encoder, G2SD's
    # generic-distillation student: fresh head, fc_norm, ...)
    init_required: bool = opt(False, None, "refuse to start without init")
    # teacher: "" (no distillation), a model named on a hub ("timm:NAME" a timm pretrained tag, "hf-hub:REPO"; read
    # through timm's / huggingface_hub's cache, maskedkd.hub), a checkpoint path with teacher_model, or "cache:NAME"
    # (an embedded teacher config, trained once and cached; the committed artefact is used when it matches)
    teacher: str = opt("", None, "'' (no distillation), timm:NAME, hf-hub:REPO, a checkpoint path, or cache:NAME")
    teacher_model: str = opt("", _known_model(True), "the preset of a teacher given as a checkpoint path")
    num_keep: int = opt(0, "[0, inf)", "patches the teacher sees; 0: from keep_ratio")
    keep_ratio: float = opt(1.0, "(0, 1]", "the teacher's share of the patches; 1.0: all, plain logit KD")
    keep_schedule: str = opt("", None, "'A:B' (percent, linear) or '100*3,50' (percent*epochs phases)")
    adaptive_mass: float = opt(0.0, "[0, 1]", "a share of the student's CLS attention; 0: off")
    teacher_tome_r: int = opt(0, "[0, inf)", "tokens the full teacher merges per block (ToMe ablation); 0: off")
    criterion: str = opt("topk", None, "how scores become kept patches (select.register_criterion)")
    # whose CLS attention ranks the patches: "student" (MaskedKD), "teacher" (its own attention, an extra pass),
    # or a fixed model: "cache:NAME" (an embedded config, trained once) or a checkpoint path with scorer_model
    scorer: str = opt("student", None, "'student', 'teacher', timm:NAME, hf-hub:REPO, cache:NAME or a checkpoint path")
    scorer_model: str = opt("", _known_model(True), "the preset of a scorer given as a checkpoint path")
    student_keep: int = opt(0, "[0, inf)", "the opposite ablation: the student trains on this many random patches")
    kd_weight: float = opt(0.5, "[0, 1]", "the distillation term's share of the loss")
    temperature: float = opt(1.0, "(0, inf)", "the distillation softmax temperature")
    kd_kind: str = opt("soft", ("soft", "hard", "manifold", "attention"),
                       "soft | hard | manifold | attention (feature terms on the kept patches)")
    feature_weight: float = opt(1.0, "[0, inf)", "the feature term's weight")
    kl_reduction: str = opt("batchmean", ("batchmean", "deit"), "the KL's divisor: batch, or batch x classes")
    # optimisation
    epochs: int = opt(300, "[1, inf)", "training epochs")
    batch_size: int = opt(1024, "[1, inf)", "the global batch, over all processes")
    lr: float = opt(5e-4, "(0, inf)", "the learning rate per 512 images: lr * batch_size / 512")
    min_lr: float = opt(1e-5, "[0, inf)", "the cosine schedule's last learning rate")
    warmup_lr: float = opt(1e-6, "[0, inf)", "the warm-up's first learning rate")
    warmup_epochs: float = opt(5.0, "[0, inf)", "epochs of linear warm-up")
    weight_decay: float = opt(0.05, "[0, inf)", "AdamW's weight decay")
    layer_decay: float = opt(0.0, "[0, 1]", "the lr ratio of a block to the one above it; 0: off (DeiT)")
    seed: int = opt(0, "[0, inf)", "the run's seed")
    compile: bool = opt(True, None, "torch.compile the step")
    precision: str = opt("auto", ("auto", "bf16", "fp32"), "auto: bf16 autocast on CUDA, fp32 on CPU")
    threads: int = opt(0, "[0, inf)", "torch threads per process; 0: torch's default")
    # bookkeeping
    out_dir: str = opt("", None, "the run's folder; default runs/NAME")
    resume: bool = opt(False, None, "continue out_dir/checkpoint.pt (a fresh start, said so, where there is none)")
    overwrite: bool = opt(False, None, "start over in an out_dir that holds a checkpoint")
    ckpt_every: int = opt(0, "[0, inf)", "steps between checkpoints; 0: end of each epoch only")
    log_every: int = opt(20, "[1, inf)", "steps between log lines")
    max_steps: int = opt(0, "[0, inf)", "stop after this many steps in total (smoke runs); 0: no limit")
    eval_masked_teacher: bool = opt(True, None, "also log the teacher's accuracy on the student-selected patches")
    eval_every: int = opt(1, "[1, inf)", "epochs between evaluations; the last epoch is always evaluated")
    eval_teacher_every: int = opt(1, "[1, inf)", "epochs between masked-teacher evaluations")
    name: str = opt("run", _run_name, "the run's name")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = check_field(f, getattr(self, f.name))
            if v is not getattr(self, f.name):
                object.__setattr__(self, f.name, v)  # a numpy integer or float made a Python one
        check_combinations(self)

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)


KINDS = {"int": int, "float": float, "bool": bool, "str": str}


def check_field(f: dataclasses.Field, value, source: str | None = None):
    """One field's value checked against its declaration (kind, interval or choices); numpy numbers become
    Python's. Raises checks.InputError naming the key, the value and the source."""
    kind, within, meaning = KINDS[f.type], f.metadata["within"], f.metadata["meaning"]
    if kind is bool:
        return checks.as_bool(value, f.name, meaning, source)
    if kind is int:
        return checks.as_int(value, f.name, within, meaning, source)
    if kind is float:
        return checks.as_number(value, f.name, within, meaning, source)
    if isinstance(within, tuple):
        return checks.as_choice(value, f.name, within, meaning, source)
    value = checks.as_text(value, f.name, meaning, source)
    why = within(value) if callable(within) else None
    if value != value.strip():
        why = "starts or ends with a space"
    if why:
        raise checks.InputError(f"{f'{source}: ' if source else ''}{f.name}={value!r} {why}")
    return value


def field_table() -> str:
    """Every TrainConfig field with its kind, default and what it takes, as a markdown table (python -m
    maskedkd.train --help prints it)."""
    rows = ["| key | kind | default | takes | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(TrainConfig):
        w = f.metadata["within"]
        takes = (" / ".join(w) if isinstance(w, tuple) else w if isinstance(w, str) else
                 "true / false" if f.type == "bool" else getattr(w, "takes", "text"))
        rows.append(f"| {f.name} | {f.type} | {f.default!r} | {takes} | {f.metadata['meaning']} |")
    return "\n".join(rows)


# Fields that one data source reads and the others would ignore: a value other than the default with another data
# source is refused (a digit-scene option on the sound set, SpecAugment on images).
DIGITS = ("digits",)
DATA_ONLY = {**{k: DIGITS for k in ("clean_epochs", "fresh_clutter", "digit_size", "copies", "distractors", "jitter",
                                    "num_clutter", "noise", "texture", "batch_aug", "shift")},
             "label_noise": ("digits", "sounds"), "freq_mask": ("sounds", "esc50"), "time_mask": ("sounds", "esc50"),
             "events": ("sounds",), "train_size": ("digits", "sounds"), "test_size": ("digits", "sounds"),
             "fold": ("esc50",), "mixup": ("imagefolder",), "repeated_aug": ("imagefolder",),
             "device_aug": ("imagefolder",), "device_randaug": ("imagefolder",),
             "data_path": ("imagefolder", "esc50")}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
# what a teacher's options describe; with no teacher they would be ignored
TEACHER_OPTIONS = ("teacher_model", "num_keep", "keep_ratio", "keep_schedule", "adaptive_mass", "teacher_tome_r",
                   "criterion", "scorer", "scorer_model", "kd_weight", "temperature", "kd_kind", "feature_weight",
                   "kl_reduction")


def check_combinations(cfg: TrainConfig) -> None:
    """Options that cannot combine, refused in one place (at construction, before any data or model), naming both.
    A registered config may be a template that a command line completes (the ImageNet configs name their teacher's
    preset, the user its file): what only a complete run needs is check_runnable's."""
    def bad(msg):
        raise checks.InputError(msg)
    for key, kinds in DATA_ONLY.items():
        if cfg.data not in kinds and getattr(cfg, key) != _DEFAULTS[key]:
            bad(f"{key}={getattr(cfg, key)!r} applies to data {' / '.join(kinds)} only, not data={cfg.data!r}, where "
                f"it would be ignored")
    if cfg.device_randaug and not cfg.device_aug:
        bad("device_randaug=true runs RandAugment on the device's uint8 batch: it needs device_aug=true")
    if cfg.resume and cfg.overwrite:
        bad("resume=true and overwrite=true contradict each other: resume continues the checkpoint in out_dir, "
            "overwrite starts over")
    if cfg.data in ("digits", "sounds") and cfg.train_size < cfg.batch_size:
        bad(f"train_size={cfg.train_size} is smaller than batch_size={cfg.batch_size}: no training step")
    if cfg.data == "digits":
        from ..data.images import check_scene
        check_scene(digit_size=cfg.digit_size, jitter=cfg.jitter, num_clutter=cfg.num_clutter, noise=cfg.noise,
                    copies=cfg.copies, distractors=cfg.distractors, texture=cfg.texture)
        if cfg.clean_epochs > cfg.epochs:
            bad(f"clean_epochs={cfg.clean_epochs} exceeds epochs={cfg.epochs}")
    for ref, model, role in ((cfg.teacher, cfg.teacher_model, "teacher"), (cfg.scorer, cfg.scorer_model, "scorer")):
        if not ref:
            continue  # a template's teacher comes from the command line (check_runnable)
        if ref.startswith(("timm:", "hf-hub:")):
            if not ref.split(":", 1)[1].strip("/"):
                bad(f"{role}={ref!r} names no model: timm:NAME (a timm pretrained tag) or hf-hub:OWNER/REPO")
            continue  # a hub model brings its config; a preset beside it must describe it (teachers.load_model)
        if role == "scorer" and ref in ("student", "teacher"):
            if model:
                bad(f"{role}_model={model!r} names the preset of a {role} given as a checkpoint path; {role}={ref!r} "
                    f"brings its own model")
        elif not model and not ref.startswith("cache:"):  # a cache:NAME's model must equal its config's (teachers)
            bad(f"{role}={ref!r} is a checkpoint path: it needs {role}_model=NAME (a preset such as "
                f"deit_small_patch16_224)")
    counts = {k: getattr(cfg, k) for k in ("num_keep", "keep_ratio", "keep_schedule") if getattr(cfg, k) != _DEFAULTS[k]}
    if len(counts) > 1:
        bad(f"{' and '.join(f'{k}={v!r}' for k, v in counts.items())} {'both' if len(counts) == 2 else 'all'} set the kept "
            f"count of the teacher's patches: give one")
    if cfg.keep_schedule:
        from ..select import parse_keep_schedule
        parse_keep_schedule(cfg.keep_schedule, cfg.epochs)
    masked = bool(counts)
    if cfg.teacher_tome_r and (masked or cfg.adaptive_mass or cfg.criterion != "topk" or cfg.scorer != "student"):
        bad(f"teacher_tome_r={cfg.teacher_tome_r} merges tokens in the full teacher; it cannot combine with masking "
            f"options ({counts or ''} adaptive_mass={cfg.adaptive_mass}, criterion={cfg.criterion!r}, "
            f"scorer={cfg.scorer!r})")
    if not masked and (cfg.criterion, cfg.scorer) != ("topk", "student"):
        bad(f"criterion={cfg.criterion!r} and scorer={cfg.scorer!r} choose the patches to keep, but the teacher sees "
            f"every patch (no num_keep, keep_ratio or keep_schedule)")
    if cfg.adaptive_mass and (not masked or cfg.keep_schedule or cfg.criterion != "topk" or cfg.scorer != "student"):
        bad(f"adaptive_mass={cfg.adaptive_mass} keeps the top of the student's attention within a fixed budget "
            f"(num_keep or keep_ratio); it cannot combine with keep_schedule={cfg.keep_schedule!r}, "
            f"criterion={cfg.criterion!r}, scorer={cfg.scorer!r}, or go without a budget")
    from ..select import check_criterion_name
    check_criterion_name(cfg.criterion)
    if cfg.student_keep and masked:
        bad(f"student_keep={cfg.student_keep} masks the student; the teacher's {counts} mask the teacher: not both")
    if cfg.kd_kind in ("manifold", "attention") and (cfg.adaptive_mass or cfg.teacher_tome_r or cfg.student_keep):
        bad(f"kd_kind={cfg.kd_kind!r} distils features of the kept patches; it cannot combine with adaptive_mass="
            f"{cfg.adaptive_mass}, teacher_tome_r={cfg.teacher_tome_r} or student_keep={cfg.student_keep}")
    ignored = {k: getattr(cfg, k) for k in ("temperature", "kl_reduction") if cfg.kd_kind == "hard"
               and getattr(cfg, k) != _DEFAULTS[k]}
    if cfg.kd_kind not in ("manifold", "attention") and cfg.feature_weight != _DEFAULTS["feature_weight"]:
        ignored["feature_weight"] = cfg.feature_weight
    if ignored:
        bad(f"{ignored} would be ignored with kd_kind={cfg.kd_kind!r} (hard distillation has no softmax temperature "
            f"or KL; feature_weight weighs a manifold or attention term)")


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


def _by_name() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(TrainConfig)}


def apply_overrides(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """key=value strings -> a new config, each value parsed strictly for its field (checks.parse_text) and checked
    with the rest; an unknown key, a key given twice or text that is not of the field's kind raises, naming it."""
    by_name, kw = _by_name(), {}
    for it in items:
        if "=" not in it:
            raise checks.InputError(f"override {it!r} is not key=value")
        k, v = it.split("=", 1)
        if k not in by_name:
            raise checks.InputError(f"unknown config key {k!r}; valid keys: {sorted(by_name)}")
        if k in kw:
            raise checks.InputError(f"{k} is given twice ({k}={kw[k]!r} and {it!r}): give it once")
        kw[k] = check_field(by_name[k], checks.parse_text(KINDS[by_name[k].type], v, k))
    return cfg.replace(**kw)


def config_from_json(path: str | Path) -> TrainConfig:
    """A config written as JSON, every field by name (a run's launch file, or its out_dir/config.json). A string
    given for a number or a bool is parsed as on the command line ("false" is false); a file that is not JSON, not
    an object, has fields this version does not know, or values outside their fields raises, naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise checks.InputError(f"config file {path} cannot be read: {e.strerror or e}") from None
    def no_repeats(pairs):
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise checks.InputError(f"config file {path} gives {twice} twice: give each key once")
        return dict(pairs)
    try:
        rec = json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as e:
        raise checks.InputError(f"config file {path} is not valid JSON: {e.msg} at line {e.lineno} column "
                                f"{e.colno}{' (the file is empty)' if not text.strip() else ''}") from None
    if not isinstance(rec, dict):
        raise checks.InputError(f"config file {path} holds a JSON {type(rec).__name__}, not an object of fields")
    by_name = _by_name()
    unknown = sorted(set(rec) - set(by_name))
    if unknown:
        raise checks.InputError(f"config file {path}: unknown config fields {unknown}; valid keys: {sorted(by_name)}")
    kw = {k: check_field(by_name[k], checks.parse_text(KINDS[by_name[k].type], v, k, str(path))
                         if isinstance(v, str) else v, str(path)) for k, v in rec.items()}
    try:
        return TrainConfig(**kw)
    except checks.InputError as e:
        raise checks.InputError(f"config file {path}: {e}") from None


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


def check_runnable(cfg: TrainConfig) -> None:
    """What a run needs beyond a valid config, checked by the training program before anything is made: the files a
    template leaves to the command line, and no option that a run without a teacher would ignore."""
    if not cfg.teacher:
        set_ = sorted(k for k in TEACHER_OPTIONS if getattr(cfg, k) != _DEFAULTS[k])
        if set_:
            raise checks.InputError(f"{set_} describe the teacher, what it sees or the distillation loss, but the run "
                                    f"has no teacher (teacher=PATH or teacher=cache:NAME), so they would be ignored")
    if cfg.init_required and not cfg.init:
        raise checks.InputError(f"config {cfg.name!r} fine-tunes a pre-trained student: pass init=PATH (see its "
                                f"docstring: python -m maskedkd.train --help)")
    if cfg.data in ("imagefolder", "esc50") and not cfg.data_path:
        raise checks.InputError(f"data={cfg.data} needs data_path=" + ("/path/with/train/and/val" if cfg.data ==
                                "imagefolder" else "/path/to/ESC-50 (with audio/ and meta/esc50.csv)"))
