"""The Audio Spectrogram Transformer (AST, Gong et al. 2021, arXiv 2104.01778) on the core functions.

    cfg = mkd.ast_config("base384")                     # 1024 frames x 128 mel bins -> 12 x 101 = 1212 patches
    teacher = mkd.load_checkpoint("pytorch_model.bin", cfg.replace(num_classes=527))  # a Hugging Face AST file
    student = mkd.ast_from_deit(deit_params, deit_cfg, mkd.ast_config("tiny224"))    # the AST paper's init

An AST is a distilled DeiT (CLS + distillation token) over overlapping 16 x 16 patches of a one-channel
(freq, time) spectrogram, head = LayerNorm + Linear on the mean of the two prefix tokens. Importing this module
registers `convert_hf_ast` in `checkpoint.CONVERTERS`, so `load_checkpoint` reads Hugging Face AST files.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from einops import rearrange

from . import checkpoint
from .attention import Params
from .config import ViTConfig
from .model import init_params

# transformers ASTConfig defaults (= the AST paper's base384 model): ViT-B width, 16 x 16 patches, stride 10 on
# both axes, 1024 frames (10.24 s at a 10 ms shift) x 128 mel bins; every LayerNorm has eps 1e-12.
_DEFAULTS = dict(max_length=1024, num_mel_bins=128, patch_size=16, frequency_stride=10, time_stride=10,
                 embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, num_classes=527, norm_eps=1e-12)
KEYWORDS = tuple(_DEFAULTS)

# AST paper / ast_models.py `model_size`: each size starts from a distilled DeiT; 527 AudioSet classes.
AST_PRESETS: dict[str, dict] = {
    "tiny224": dict(embed_dim=192, depth=12, num_heads=3),
    "small224": dict(embed_dim=384, depth=12, num_heads=6),
    "base224": dict(embed_dim=768, depth=12, num_heads=12),
    "base384": dict(embed_dim=768, depth=12, num_heads=12),  # the published AudioSet / ESC-50 models
}
# The DeiT checkpoint (timm name, image size) each preset is initialised from [AST ast_models.py].
DEIT_SOURCES: dict[str, tuple[str, int]] = {
    "tiny224": ("deit_tiny_distilled_patch16_224", 224),
    "small224": ("deit_small_distilled_patch16_224", 224),
    "base224": ("deit_base_distilled_patch16_224", 224),
    "base384": ("deit_base_distilled_patch16_224", 384),  # timm's deit_base_distilled_patch16_384
}


def ast_config(preset: str | None = None, **kw) -> ViTConfig:
    """A frozen AST ViTConfig: input (b, max_length, num_mel_bins), grid ((bins-p)//fs+1, (len-p)//ts+1)."""
    if preset is not None and preset not in AST_PRESETS:
        raise ValueError(f"unknown AST preset {preset!r}; valid presets: {sorted(AST_PRESETS)}")
    bad = sorted(set(kw) - set(KEYWORDS))
    if bad:
        raise ValueError(f"unknown keyword(s) {bad}; valid keywords: {list(KEYWORDS)}")
    a = {**_DEFAULTS, **(AST_PRESETS[preset] if preset else {}), **kw}
    return ViTConfig(
        name=f"ast_{preset or 'custom'}", img_size=(a["num_mel_bins"], a["max_length"]),
        patch_size=a["patch_size"], patch_stride=(a["frequency_stride"], a["time_stride"]), in_chans=1,
        num_classes=a["num_classes"], embed_dim=a["embed_dim"], depth=a["depth"], num_heads=a["num_heads"],
        mlp_ratio=a["mlp_ratio"], num_prefix_tokens=2, pos_embed_prefix=True, head="prefix_mean",
        norm_eps=a["norm_eps"], input_layout="btf")


def deit_source_config(preset: str) -> ViTConfig:
    """The core config of the DeiT checkpoint the AST paper initialises `preset` from."""
    if preset not in DEIT_SOURCES:
        raise ValueError(f"unknown AST preset {preset!r}; valid presets: {sorted(DEIT_SOURCES)}")
    from .config import vit_config
    name, size = DEIT_SOURCES[preset]
    return vit_config(name, img_size=size)


def _fit_axis(grid: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Cut the middle `size` rows of axis dim (2: freq, 3: time) of a (1, d, f, t) grid, or stretch it bilinearly."""
    src = grid.shape[dim]
    if size <= src:
        start = src // 2 - size // 2  # ast_models.py: int(src / 2) - int(size / 2)
        return grid.narrow(dim, start, size)
    out = list(grid.shape[2:])
    out[dim - 2] = size
    return F.interpolate(grid, size=tuple(out), mode="bilinear", align_corners=False)


def adapt_pos_embed(pos: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int],
                    num_prefix: int = 2) -> torch.Tensor:
    """pos (1, np + f*t, d) on src_grid (f, t) -> (1, np + F*T, d) on dst_grid, the AST code's rule per axis
    (time first, then frequency): a shorter axis is CUT FROM THE MIDDLE, a longer one interpolated bilinearly
    (align_corners=False). ESC-50's 512 frames keep time columns 25..74 of AudioSet's 101. Prefix rows copied."""
    (f, t), (ff, tt) = tuple(src_grid), tuple(dst_grid)
    if pos.ndim != 3 or pos.shape[1] != num_prefix + f * t:
        raise ValueError(f"pos_embed shape {tuple(pos.shape)} does not fit {num_prefix} prefix + grid {src_grid}")
    if (f, t) == (ff, tt):
        return pos
    grid = rearrange(pos[:, num_prefix:].float(), "o (f t) d -> o d f t", f=f, t=t)
    grid = _fit_axis(_fit_axis(grid, tt, 3), ff, 2)
    patches = rearrange(grid, "o d f t -> o (f t) d").to(pos.dtype)
    return torch.cat([pos[:, :num_prefix], patches], dim=1)


# Hugging Face AST names (after the `audio_spectrogram_transformer.` prefix) -> timm names. transformers 4.x
# (the published checkpoints, e.g. MIT/ast-finetuned-audioset-10-10-0.4593) and 5.x use different layer names.
_TOP = {"embeddings.cls_token": "cls_token", "embeddings.distillation_token": "dist_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
        "classifier.layernorm.weight": "fc_norm.weight", "classifier.layernorm.bias": "fc_norm.bias",
        "classifier.dense.weight": "head.weight", "classifier.dense.bias": "head.bias"}
_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")  # 4.x | 5.x
_IN_LAYER = {
    "attention.attention.query": "q", "attention.attention.key": "k", "attention.attention.value": "v",  # 4.x
    "attention.q_proj": "q", "attention.k_proj": "k", "attention.v_proj": "v",  # 5.x
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1", "mlp.fc1": "mlp.fc1",
    "output.dense": "mlp.fc2", "mlp.fc2": "mlp.fc2",
    "layernorm_before": "norm1", "layernorm_after": "norm2",
}
# The original AST release (github.com/YuanGongND/ast): a timm DeiT under `v.` (its unused ImageNet heads
# included) and `mlp_head` = Sequential(LayerNorm, Linear).
_ORIGINAL = [(re.compile(r"^v\.head(_dist)?\.(weight|bias)$"), None),
             (re.compile(r"^mlp_head\.0\."), "fc_norm."), (re.compile(r"^mlp_head\.1\."), "head."),
             (re.compile(r"^v\."), "")]


def _hf_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename HF keys and fuse q, k, v rows into attn.qkv; keys it does not know pass through unchanged."""
    out, qkv = {}, {}
    for key, v in sd.items():
        k = key.removeprefix("audio_spectrogram_transformer.")
        m = _LAYER.match(k)
        if k in _TOP:
            out[_TOP[k]] = v
        elif m and m.group(2) in _IN_LAYER:
            i, part, kind = m.group(1), _IN_LAYER[m.group(2)], m.group(3)
            if part in ("q", "k", "v"):
                qkv.setdefault((i, kind), {})[part] = (key, v)
            else:
                out[f"blocks.{i}.{part}.{kind}"] = v
        else:
            out[key] = v
    for (i, kind), parts in qkv.items():
        if set(parts) == {"q", "k", "v"}:
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[p][1] for p in "qkv"], dim=0)
        else:  # incomplete: keep the original names so match_params reports them
            out.update(dict(parts.values()))
    return out


def _original_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pat, rep in _ORIGINAL:
            if pat.search(k):
                k = None if rep is None else pat.sub(rep, k)
                break
        if k is not None:
            out[k] = v
    return out


def convert_hf_ast(sd: dict[str, torch.Tensor], cfg: ViTConfig) -> dict[str, torch.Tensor]:
    """A checkpoint CONVERTER: Hugging Face AST (transformers 4.x or 5.x names) or original AST release state
    dict -> timm names, q/k/v fused; the position embedding is fitted to cfg's time grid when only the number of
    frames differs (see `adapt_pos_embed`). Any other dict is returned unchanged."""
    if any(k.startswith("audio_spectrogram_transformer.") for k in sd):
        out = _hf_names(sd)
    elif "v.pos_embed" in sd and "mlp_head.1.weight" in sd:
        out = _original_names(sd)
    else:
        return sd
    pos = out.get("pos_embed")
    if cfg.input_layout == "btf" and pos is not None and pos.ndim == 3:
        n_src, (f, t) = pos.shape[1] - cfg.num_prefix_tokens, cfg.grid_size
        if n_src != f * t and n_src > 0 and n_src % f == 0:
            out["pos_embed"] = adapt_pos_embed(pos, (f, n_src // f), (f, t), cfg.num_prefix_tokens)
    return out


def ast_from_deit(deit_params: Params, deit_cfg: ViTConfig, ast_cfg: ViTConfig, *, seed: int = 0) -> Params:
    """Distilled-DeiT params -> AST params, the AST paper's ImageNet init: RGB patch filters summed into one
    channel (bias kept), the patch position grid fitted to the (freq, time) grid by `adapt_pos_embed`, tokens
    and blocks copied, a fresh head (fc_norm + head from `init_params(ast_cfg, seed)`)."""
    if deit_cfg.num_prefix_tokens != 2 or not deit_cfg.pos_embed_prefix:
        raise ValueError(f"AST starts from a distilled DeiT (2 prefix tokens with position embeddings); "
                         f"{deit_cfg.name!r} has num_prefix_tokens={deit_cfg.num_prefix_tokens}")
    for f in ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "qkv_bias", "layer_scale"):
        if getattr(deit_cfg, f) != getattr(ast_cfg, f):
            raise ValueError(f"{f} differs: DeiT {getattr(deit_cfg, f)} vs AST {getattr(ast_cfg, f)}")
    fresh = init_params(ast_cfg, seed=seed)
    out = {k: v for k, v in deit_params.items()
           if k.startswith("blocks.") or k in ("cls_token", "dist_token", "norm.weight", "norm.bias")}
    out["patch_embed.proj.weight"] = deit_params["patch_embed.proj.weight"].sum(dim=1, keepdim=True)
    out["patch_embed.proj.bias"] = deit_params["patch_embed.proj.bias"]
    out["pos_embed"] = adapt_pos_embed(deit_params["pos_embed"], deit_cfg.grid_size, ast_cfg.grid_size, 2)
    out.update({k: fresh[k] for k in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias")})
    return checkpoint.match_params(out, ast_cfg, dtype=deit_params["pos_embed"].dtype)


if convert_hf_ast not in checkpoint.CONVERTERS:
    checkpoint.CONVERTERS.append(convert_hf_ast)
