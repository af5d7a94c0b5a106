"""Frozen model configs and the timm-named presets.

One config type describes every transformer here: a plain ViT / DeiT, a distilled DeiT (two prefix tokens,
two heads), DeiT-III (layer scale, no position embedding on the class token) and the Audio Spectrogram
Transformer (one-channel input, overlapping patches, two prefix tokens, head on their mean), a ViT fine-tuned
from MAE (`head="avg"`: global average pooling of the patch tokens, `fc_norm`, no final norm), the CLIP image
tower (`pre_norm`, QuickGELU) and CaiT (`family="cait"`: talking-heads self-attention on the patches, then
`class_attn_depth` class-attention blocks that update the class token alone; see cait.py).
Prefix tokens are a count (`num_prefix_tokens`), never a special case.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

HEADS = ("token", "token_dist", "prefix_mean", "avg")
TWO_PREFIX_HEADS = ("token_dist", "prefix_mean")
LAYOUTS = ("bchw", "btf")
FAMILIES = ("vit", "cait")
ACTS = ("gelu", "quick_gelu")


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {v!r}")
    return t


@dataclass(frozen=True)
class ViTConfig:
    """A vision (or spectrogram) transformer. Image size is (height, width) of the (b, c, h, w) input the
    patch embedding sees; for AST that is (num_mel_bins, max_length) after the (b, t, f) -> (b, 1, f, t) swap."""

    name: str = "custom"
    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    patch_stride: tuple[int, int] | None = None  # None: non-overlapping (stride = patch_size)
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_prefix_tokens: int = 1  # CLS (+ distillation token) (+ register tokens): every token before the patches
    # register tokens (Darcet et al., "Vision Transformers Need Registers", ICLR 2024; timm's reg_tokens): learned
    # tokens after CLS (and the distillation token) that no head reads, counted in num_prefix_tokens as timm counts them
    reg_tokens: int = 0
    pos_embed_prefix: bool = True  # False for DeiT-III: position embedding covers the patches only
    layer_scale: float | None = None  # DeiT-III init value for ls1/ls2 gamma; None: no layer scale
    # token | token_dist (mean of two heads, timm eval) | prefix_mean (AST) | avg (MAE fine-tuning: mean of the patch
    # tokens -> fc_norm -> head, no final norm; = timm global_pool="avg"). An avg model keeps its CLS token: its
    # last-block CLS query row still ranks the patches for MaskedKD (see model.student_forward)
    head: str = "token"
    norm_eps: float = 1e-6
    input_layout: str = "bchw"  # bchw (images) | btf (AST spectrograms: batch, time, freq)
    family: str = "vit"  # vit | cait (self-attention on patches only, then class-attention blocks)
    class_attn_depth: int = 0  # CaiT: number of class-attention blocks (timm's depth_token_only); 0 for a ViT
    pre_norm: bool = False  # CLIP: LayerNorm `norm_pre` before the blocks, and (as in timm) no patch-embed bias
    act: str = "gelu"  # MLP activation: gelu | quick_gelu (x * sigmoid(1.702 x), OpenAI CLIP)

    def __post_init__(self):
        object.__setattr__(self, "img_size", _pair(self.img_size))
        if self.patch_stride is not None:
            object.__setattr__(self, "patch_stride", _pair(self.patch_stride))
        for f in ("patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.head not in HEADS:
            raise ValueError(f"head={self.head!r} is not one of {HEADS}")
        if self.input_layout not in LAYOUTS:
            raise ValueError(f"input_layout={self.input_layout!r} is not one of {LAYOUTS}")
        if not 0 <= self.reg_tokens <= 16:
            raise ValueError(f"reg_tokens must be in [0, 16], got {self.reg_tokens}")
        if self.class_tokens not in (1, 2):
            raise ValueError(f"num_prefix_tokens - reg_tokens (CLS, and a distillation token) must be 1 or 2, got "
                             f"num_prefix_tokens={self.num_prefix_tokens} with reg_tokens={self.reg_tokens}")
        if self.head in TWO_PREFIX_HEADS and self.class_tokens != 2:
            raise ValueError(f"head={self.head!r} needs two class tokens (num_prefix_tokens - reg_tokens = 2), got "
                             f"num_prefix_tokens={self.num_prefix_tokens} with reg_tokens={self.reg_tokens}")
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r} is not one of {FAMILIES}")
        if self.act not in ACTS:
            raise ValueError(f"act={self.act!r} is not one of {ACTS}")
        if self.family == "vit" and self.class_attn_depth != 0:
            raise ValueError(f"class_attn_depth={self.class_attn_depth} needs family='cait'")
        if self.family == "cait":
            if self.class_attn_depth < 1:
                raise ValueError(f"family='cait' needs class_attn_depth >= 1, got {self.class_attn_depth}")
            if (self.num_prefix_tokens, self.head, self.pos_embed_prefix, self.pre_norm, self.input_layout) != (
                    1, "token", False, False, "bchw") or self.layer_scale is None:
                raise ValueError("family='cait' needs one class token, head='token', pos_embed_prefix=False, "
                                 "a layer_scale init, pre_norm=False and image input")
        h, w = self.img_size
        if self.patch_stride is None:
            for side, s in (("height", h), ("width", w)):
                if s % self.patch_size:
                    raise ValueError(
                        f"image {side} {s} is not divisible by patch_size {self.patch_size}")
        elif h < self.patch_size or w < self.patch_size:
            raise ValueError(f"input {self.img_size} is smaller than one patch of {self.patch_size}")

    @property
    def stride(self) -> tuple[int, int]:
        return self.patch_stride or (self.patch_size, self.patch_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (rows, cols); for overlapping patches (size - patch) // stride + 1 per side."""
        (h, w), (sh, sw), p = self.img_size, self.stride, self.patch_size
        return ((h - p) // sh + 1, (w - p) // sw + 1)

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def class_tokens(self) -> int:
        """The prefix tokens a head may read: CLS, and a distilled DeiT's or AST's second token (not the registers)."""
        return self.num_prefix_tokens - self.reg_tokens

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def patch_dim(self) -> int:
        return self.in_chans * self.patch_size**2

    def replace(self, **kw) -> "ViTConfig":
        return dataclasses.replace(self, **kw)


def _deit(name, dim, depth, heads, **kw):
    return ViTConfig(name=name, embed_dim=dim, depth=depth, num_heads=heads, **kw)


def _cait(name, dim, heads, depth):
    """timm 1.0.31 cait.py: qkv bias, LayerNorm eps 1e-6, layer scale 1e-5, 2 class-attention blocks."""
    return ViTConfig(name=name, embed_dim=dim, depth=depth, num_heads=heads, family="cait", class_attn_depth=2,
                     pos_embed_prefix=False, layer_scale=1e-5)


def _clip(name, **kw):
    """timm 1.0.31 vision_transformer.py: ViT-B/16 with norm_pre, no patch-embed bias, LayerNorm eps 1e-5."""
    return ViTConfig(name=name, embed_dim=768, depth=12, num_heads=12, pre_norm=True, norm_eps=1e-5, **kw)


# Presets named as in timm 1.0 (sizes from timm's deit.py; the same as the DeiT / DeiT-III papers).
PRESETS: dict[str, ViTConfig] = {
    "deit_tiny_patch16_224": _deit("deit_tiny_patch16_224", 192, 12, 3),
    "deit_small_patch16_224": _deit("deit_small_patch16_224", 384, 12, 6),
    "deit_base_patch16_224": _deit("deit_base_patch16_224", 768, 12, 12),
    "deit_tiny_distilled_patch16_224": _deit(
        "deit_tiny_distilled_patch16_224", 192, 12, 3, num_prefix_tokens=2, head="token_dist"),
    "deit_small_distilled_patch16_224": _deit(
        "deit_small_distilled_patch16_224", 384, 12, 6, num_prefix_tokens=2, head="token_dist"),
    "deit_base_distilled_patch16_224": _deit(
        "deit_base_distilled_patch16_224", 768, 12, 12, num_prefix_tokens=2, head="token_dist"),
    "deit3_small_patch16_224": _deit(
        "deit3_small_patch16_224", 384, 12, 6, pos_embed_prefix=False, layer_scale=1e-6),
    "deit3_base_patch16_224": _deit(
        "deit3_base_patch16_224", 768, 12, 12, pos_embed_prefix=False, layer_scale=1e-6),
    "deit3_large_patch16_224": _deit(
        "deit3_large_patch16_224", 1024, 24, 16, pos_embed_prefix=False, layer_scale=1e-6),
    "deit3_huge_patch14_224": _deit(
        "deit3_huge_patch14_224", 1280, 32, 16, patch_size=14, pos_embed_prefix=False, layer_scale=1e-6),
    # CaiT at 224 (timm's cait_*_224; the paper's CaiT-S24 teacher is cait_s24_224 [docs/paper.md#teachers])
    "cait_xxs24_224": _cait("cait_xxs24_224", 192, 4, 24),
    "cait_xxs36_224": _cait("cait_xxs36_224", 192, 4, 36),
    "cait_s24_224": _cait("cait_s24_224", 384, 8, 24),
    # CLIP ViT-B/16 image towers. The GELU one defaults to 1000 classes (timm's default tag is an ImageNet
    # fine-tune); the QuickGELU one (OpenAI / MetaCLIP weights) to timm's 512-wide image-embedding projection:
    # pass num_classes=1000 for an ImageNet fine-tune of it.
    "vit_base_patch16_clip_224": _clip("vit_base_patch16_clip_224"),
    "vit_base_patch16_clip_quickgelu_224": _clip("vit_base_patch16_clip_quickgelu_224", act="quick_gelu",
                                                 num_classes=512),
}

# MAE's fine-tuning models by MAE's names (facebookresearch/mae models_vit.py vit_{base,large}_patch16,
# vit_huge_patch14 with global_pool=True, its main_finetune.py default) = timm's vit_{base,large}_patch16_224 /
# vit_huge_patch14_224 with global_pool="avg"; apart from PRESETS, which holds timm's own model names. A pre-trained
# MAE encoder file (mae_pretrain_vit_*.pth, or timm's `.mae` tag) starts one through checkpoint.load_init; a fine-tuned
# one (mae_finetuned_vit_*.pth) loads with load_checkpoint.
MAE_PRESETS: dict[str, ViTConfig] = {
    "mae_vit_base_patch16": _deit("mae_vit_base_patch16", 768, 12, 12, head="avg"),
    "mae_vit_large_patch16": _deit("mae_vit_large_patch16", 1024, 24, 16, head="avg"),
    "mae_vit_huge_patch14": _deit("mae_vit_huge_patch14", 1280, 32, 16, patch_size=14, head="avg"),
}

OVERRIDES = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads",
             "mlp_ratio", "class_attn_depth")


def vit_config(name: str, **overrides) -> ViTConfig:
    """A frozen preset by its timm name (DeiT, DeiT-III, CaiT, CLIP ViT-B/16; see PRESETS) or MAE's (MAE_PRESETS), with
    timm-style keyword overrides (img_size, patch_size, ...; class_attn_depth is timm's depth_token_only for CaiT)."""
    presets = {**PRESETS, **MAE_PRESETS}
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(presets)}")
    bad = sorted(set(overrides) - set(OVERRIDES))
    if bad:
        raise ValueError(f"unknown override(s) {bad}; valid keywords: {list(OVERRIDES)}")
    return presets[name].replace(**overrides)
