"""Images (b c h w) and spectrograms (b t f) -> flattened patches (b n (c p1 p2)).

The patch vector is ordered (c p1 p2), the order of a Conv2d weight (d, c, p1, p2) flattened, so a patch
embedding is `patches @ rearrange(w, 'd c p1 p2 -> (c p1 p2) d') + bias`, equal to the strided convolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .config import ViTConfig


def patchify(x: torch.Tensor, patch_size: int, stride: tuple[int, int] | None = None) -> torch.Tensor:
    """b c (gh p1) (gw p2) -> b (gh gw) (c p1 p2); with a stride < patch_size the patches overlap (AST)."""
    if x.ndim != 4:
        raise ValueError(f"patchify expects (b, c, h, w), got shape {tuple(x.shape)}")
    p = patch_size
    h, w = x.shape[-2:]
    if stride is None or tuple(stride) == (p, p):
        if h % p or w % p:
            raise ValueError(f"image size {(h, w)} is not divisible by patch size {p}")
        return rearrange(x, "b c (gh p1) (gw p2) -> b (gh gw) (c p1 p2)", p1=p, p2=p)
    if h < p or w < p:
        raise ValueError(f"input size {(h, w)} is smaller than one patch of {p}")
    cols = F.unfold(x, kernel_size=p, stride=tuple(stride))  # b (c p1 p2) n, row-major over the grid
    return rearrange(cols, "b k n -> b n k")


def to_image_layout(x: torch.Tensor, cfg: ViTConfig) -> torch.Tensor:
    """Check the input against cfg and return it as (b, c, h, w); AST's (b, t, f) becomes (b, 1, f, t)."""
    if not x.is_floating_point():
        raise ValueError(f"input dtype {x.dtype} is not a floating-point type: convert and normalise images first "
                         f"(e.g. x.float() / 255, then the mean/std normalisation the model was trained with)")
    if cfg.input_layout == "btf":
        if x.ndim != 3:
            raise ValueError(f"AST input must be (b, time, freq), got shape {tuple(x.shape)}")
        t, f = x.shape[1:]
        if f != cfg.img_size[0]:
            raise ValueError(f"spectrogram has {f} mel bins, config expects num_mel_bins={cfg.img_size[0]}")
        if t != cfg.img_size[1]:
            raise ValueError(f"spectrogram has {t} frames, config expects max_length={cfg.img_size[1]}")
        return rearrange(x, "b t f -> b 1 f t")
    if x.ndim != 4:
        raise ValueError(f"image input must be (b, c, h, w), got shape {tuple(x.shape)}")
    c, h, w = x.shape[1:]
    if c != cfg.in_chans:
        raise ValueError(f"input has {c} channels, config expects in_chans={cfg.in_chans}")
    if cfg.patch_stride is None and (h % cfg.patch_size or w % cfg.patch_size):
        raise ValueError(f"image size {(h, w)} is not divisible by patch size {cfg.patch_size}")
    if (h, w) != cfg.img_size:
        raise ValueError(f"image size {(h, w)} differs from the config's img_size {cfg.img_size}")
    return x


def patch_embed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cfg: ViTConfig) -> torch.Tensor:
    """Input in cfg's layout -> patch tokens (b n d): patchify, then one matmul with the conv filters."""
    patches = patchify(to_image_layout(x, cfg), cfg.patch_size, cfg.patch_stride)
    w = rearrange(weight, "d c p1 p2 -> d (c p1 p2)")
    return F.linear(patches, w, bias)
