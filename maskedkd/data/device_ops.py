"""RandAugment's ops as batched tensor functions, equal to the PIL ops timm applies (timm.data.auto_augment),
for the DeiT recipe on the device: x is a uint8 batch (b 3 h w) on any device, each op's argument a tensor of one
value per image (b,), so every image gets its own magnitude in one call, with no Python loop over images.

Equal to Pillow's own arithmetic bit for bit (tests/test_device_ops.py checks every op against timm's on random
images and arguments):
- invert, posterize, solarize, solarize_add: point maps;
- auto_contrast (per channel min-max stretch, PIL's truncation) and equalize (PIL's per-channel histogram LUT);
- brightness, color, contrast, sharpness: PIL's ImageEnhance blends with their degenerate images (black; the image's
  own ITU-R 601 grey; a grey of the grey image's rounded mean; the image smoothed by PIL's SMOOTH kernel), in PIL's
  float32 arithmetic, truncated.
- rotate, shear_x / shear_y, translate_x_rel / translate_y_rel: PIL's AFFINE transform with DeiT's bicubic resampling
  (PIL's cubic, taps clamped at the border, truncated) and DeiT's fill colour where a sample falls outside the image.
`rand_augment` applies a batch's draws (`rand_augment_draws`), looping over the 15 ops, never over the images.
"""
from __future__ import annotations

import torch


def _per_image(v, x: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """An argument as (b 1 1 1) on x's device: a number for every image, or one per image."""
    v = torch.as_tensor(v, dtype=dtype, device=x.device)
    return v.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1) if v.ndim == 0 else v.reshape(-1, 1, 1, 1)


def invert(x: torch.Tensor) -> torch.Tensor:
    return 255 - x


def posterize(x: torch.Tensor, bits) -> torch.Tensor:
    """Keep the top `bits` bits of each value (0 bits: black, as DeiT's Pillow gave; 8: unchanged)."""
    bits = _per_image(bits, x, torch.int32).clamp(0, 8)
    mask = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8)
    return x & mask


def solarize(x: torch.Tensor, thresh) -> torch.Tensor:
    """Values at or above thresh inverted."""
    return torch.where(x.to(torch.int32) < _per_image(thresh, x, torch.int32), x, 255 - x)


def solarize_add(x: torch.Tensor, add, thresh: int = 128) -> torch.Tensor:
    """Values below thresh raised by `add`, saturating at 255."""
    xi = x.to(torch.int32)
    return torch.where(xi < thresh, (xi + _per_image(add, x, torch.int32)).clamp(max=255), xi).to(torch.uint8)


def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    """Each channel stretched from its [min, max] to [0, 255], PIL's LUT: int(v * 255 / (hi - lo) - lo * 255 /
    (hi - lo)) in double precision; a flat channel unchanged."""
    lo = x.amin(dim=(2, 3), keepdim=True).double()
    hi = x.amax(dim=(2, 3), keepdim=True).double()
    scale = 255.0 / (hi - lo).clamp(min=1)
    out = torch.trunc(x.double() * scale + (-lo * scale)).clamp(0, 255)
    return torch.where(hi > lo, out, x.double()).to(torch.uint8)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L (ITU-R 601-2, integer arithmetic): (R 19595 + G 38470 + B 7471 + 2^15) >> 16, as (b 1 h w)."""
    r, g, b = x.to(torch.int32).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize per channel: step = (pixels - count of the last non-empty bin) // 255; the LUT maps
    bin i to (step // 2 + pixels in the bins below i) // step; a channel with one value or step 0 unchanged."""
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).to(torch.int64)
    hist = torch.zeros(b * c, 256, dtype=torch.int64, device=x.device).scatter_add_(1, flat, torch.ones_like(flat))
    nonzero = hist > 0
    last = 255 - torch.flip(nonzero, [1]).to(torch.int64).argmax(1)  # the highest non-empty bin
    step = (h * w - hist.gather(1, last[:, None])[:, 0]) // 255
    below = torch.cumsum(hist, 1) - hist
    lut = (step[:, None] // 2 + below) // step.clamp(min=1)[:, None]
    keep = (nonzero.sum(1) <= 1) | (step == 0)
    lut = torch.where(keep[:, None], torch.arange(256, device=x.device), lut).clamp(0, 255)
    return lut.gather(1, flat).reshape(b, c, h, w).to(torch.uint8)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor) -> torch.Tensor:
    """PIL's Image.blend(degenerate, image, factor): float32 in1 + factor * (in2 - in1), clipped, truncated."""
    f = _per_image(factor, x)
    d = degenerate.to(torch.int32)
    out = d.float() + f * (x.to(torch.int32) - d).float()
    return out.clamp(0, 255).to(torch.uint8)  # truncation toward zero of a value in [0, 255]


def brightness(x: torch.Tensor, factor) -> torch.Tensor:
    return _blend(torch.zeros_like(x), x, factor)


def color(x: torch.Tensor, factor) -> torch.Tensor:
    return _blend(_luma(x).expand_as(x), x, factor)


def contrast(x: torch.Tensor, factor) -> torch.Tensor:
    """Blend with a grey of the image's mean luma, rounded as PIL rounds it: int(mean + 0.5)."""
    mean = _luma(x).double().mean(dim=(1, 2, 3), keepdim=True)
    return _blend(torch.floor(mean + 0.5).expand_as(x), x, factor)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH: the 3x3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 inside the border, summed in PIL's float32
    order (the row below, the row, the row above) and rounded; the outer rows and columns copied."""
    k, k5 = torch.tensor(1.0 / 13.0, dtype=torch.float32), torch.tensor(5.0 / 13.0, dtype=torch.float32)
    f = x.float()

    def row(r, w1):
        return (r[..., :-2] * k + r[..., 1:-1] * w1) + r[..., 2:] * k
    ss = (row(f[:, :, 2:], k) + row(f[:, :, 1:-1], k5)) + row(f[:, :, :-2], k)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = (ss + 0.5).clamp(0, 255).to(torch.uint8)
    return out


def sharpness(x: torch.Tensor, factor) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness: a blend with the smoothed image."""
    return _blend(smooth(x), x, factor)


IMG_MEAN_FILL = (124, 116, 104)  # timm's img_mean hparam for DeiT: round(255 * ImageNet's mean), the fill colour


def affine(x: torch.Tensor, coeffs: torch.Tensor, fill=IMG_MEAN_FILL) -> torch.Tensor:
    """PIL's Image.transform(AFFINE, (a, b, c, d, e, f), BICUBIC, fillcolor=fill) per image: output pixel (x, y)
    samples the input at (a X + b Y + c, d X + e Y + f) with X = x + 0.5, Y = y + 0.5 (coeffs (b 6), float64), by PIL's
    cubic (p1 + d (p2 + d (p3 + d p4)) on the 4 x 4 taps around it, clamped at the border), truncated to uint8; a
    sample outside the image keeps the fill colour."""
    b, c, h, w = x.shape
    co = coeffs.to(device=x.device, dtype=torch.float64)
    X = torch.arange(w, dtype=torch.float64, device=x.device).view(1, 1, w) + 0.5
    Y = torch.arange(h, dtype=torch.float64, device=x.device).view(1, h, 1) + 0.5
    a0, a1, a2, a3, a4, a5 = (co[:, i].view(b, 1, 1) for i in range(6))
    xin, yin = a0 * X + a1 * Y + a2, a3 * X + a4 * Y + a5
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xs, ys = xin - 0.5, yin - 0.5
    x0, y0 = torch.floor(xs), torch.floor(ys)
    dx, dy = (xs - x0).unsqueeze(1), (ys - y0).unsqueeze(1)
    x0, y0 = x0.long() - 1, y0.long() - 1
    img = x.double().reshape(b, c, h * w)

    def tap(i, j):  # the input at (x0 + i, y0 + j), clamped: (b c h w)
        flat = (y0 + j).clamp(0, h - 1) * w + (x0 + i).clamp(0, w - 1)
        return img.gather(2, flat.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)

    def cubic(v1, v2, v3, v4, d):
        return v2 + d * ((-v1 + v3) + d * ((2 * (v1 - v2) + v3 - v4) + d * (-v1 + v2 - v3 + v4)))
    v = cubic(*(cubic(*(tap(i, j) for i in range(4)), dx) for j in range(4)), dy)
    out = v.clamp(0, 255).to(torch.uint8)  # truncation of a value in [0, 255]
    return torch.where(inside.unsqueeze(1), out, torch.tensor(fill, dtype=torch.uint8, device=x.device).view(1, 3, 1, 1))


def _affine_rows(x: torch.Tensor, *rows) -> torch.Tensor:
    """(b 6) float64 AFFINE coefficients on x's device from per-image values and constants."""
    return torch.stack([torch.as_tensor(r, dtype=torch.float64, device=x.device).expand(x.shape[0]) for r in rows], 1)


def shear_x(x: torch.Tensor, factor) -> torch.Tensor:
    f, one, zero = _per_image(factor, x, torch.float64).view(-1), 1.0, 0.0
    return affine(x, _affine_rows(x, one, f, zero, zero, one, zero))


def shear_y(x: torch.Tensor, factor) -> torch.Tensor:
    f, one, zero = _per_image(factor, x, torch.float64).view(-1), 1.0, 0.0
    return affine(x, _affine_rows(x, one, zero, zero, f, one, zero))


def translate_x_rel(x: torch.Tensor, pct) -> torch.Tensor:
    """A shift by pct of the width (timm: pixels = pct * width)."""
    p, one, zero = _per_image(pct, x, torch.float64).view(-1) * x.shape[3], 1.0, 0.0
    return affine(x, _affine_rows(x, one, zero, p, zero, one, zero))


def translate_y_rel(x: torch.Tensor, pct) -> torch.Tensor:
    p, one, zero = _per_image(pct, x, torch.float64).view(-1) * x.shape[2], 1.0, 0.0
    return affine(x, _affine_rows(x, one, zero, zero, zero, one, p))


def rotate(x: torch.Tensor, degrees) -> torch.Tensor:
    """PIL's Image.rotate(degrees) about the image centre: its matrix (cos and sin rounded to 15 decimals) as AFFINE."""
    h, w = x.shape[2:]
    angle = -torch.deg2rad(_per_image(degrees, x, torch.float64).view(-1))
    cos, sin = torch.round(torch.cos(angle), decimals=15), torch.round(torch.sin(angle), decimals=15)
    cx, cy = w / 2, h / 2
    return affine(x, torch.stack([cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy], 1))


# RandAugment `rand-m9-mstd0.5-inc1` (DeiT's --aa), as timm draws it: for each image, 2 ops chosen uniformly from these
# 15 with replacement (numpy's choice), each applied with probability 0.5 at a magnitude N(9, 0.5) clipped to [0, 10]
# on timm's 10-level scale, the signed ops negated with probability 0.5; the level -> argument maps are timm's
# (timm.data.auto_augment *_level_to_arg). The order is timm's _RAND_INCREASING_TRANSFORMS.
RAND_AUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def rand_augment_draws(b: int, generator: torch.Generator | None = None, *, layers: int = 2, magnitude: float = 9.0,
                       magnitude_std: float = 0.5, prob: float = 0.5, device=None) -> dict[str, torch.Tensor]:
    """The random part of RandAugment for b images, as tensors (b, layers): `op` (index into RAND_AUGMENT_OPS),
    `apply` (bool), `magnitude` (float, clipped to [0, 10]) and `negate` (bool); `op_args` turns them into each
    op's argument. Distributed as timm's draws (tests/test_device_ops.py compares them on 20,000 images)."""
    kw = dict(generator=generator, device=device)
    return {"op": torch.randint(0, len(RAND_AUGMENT_OPS), (b, layers), **kw),
            "apply": torch.rand(b, layers, **kw) <= prob,
            "magnitude": (magnitude + magnitude_std * torch.randn(b, layers, **kw)).clamp(0.0, 10.0),
            "negate": torch.rand(b, layers, **kw) > 0.5}


def op_args(name: str, magnitude: torch.Tensor, negate: torch.Tensor) -> torch.Tensor | None:
    """An op's argument per image from its magnitude (timm's level -> argument maps; None: an op without one)."""
    level = magnitude / 10.0

    def signed(v):
        return torch.where(negate, -v, v)
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return signed(level * 30.0)  # degrees
    if name == "PosterizeIncreasing":
        return 4 - (level * 4).to(torch.int64)  # bits kept: 4 down to 0
    if name == "SolarizeIncreasing":
        return 256 - (level * 256).to(torch.int64).clamp(max=256)
    if name == "SolarizeAdd":
        return (level * 110).to(torch.int64).clamp(max=128)
    if name.endswith("Increasing"):  # Color, Contrast, Brightness, Sharpness: a blend factor in [0.1, 1.9]
        return (1.0 + signed(level * 0.9)).clamp(min=0.1)
    if name in ("ShearX", "ShearY"):
        return signed(level * 0.3)
    return signed(level * 0.45)  # TranslateXRel / TranslateYRel: a share of the image's side


OPS = {"AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert, "Rotate": rotate,
       "PosterizeIncreasing": posterize, "SolarizeIncreasing": solarize, "SolarizeAdd": solarize_add,
       "ColorIncreasing": color, "ContrastIncreasing": contrast, "BrightnessIncreasing": brightness,
       "SharpnessIncreasing": sharpness, "ShearX": shear_x, "ShearY": shear_y, "TranslateXRel": translate_x_rel,
       "TranslateYRel": translate_y_rel}


def rand_augment(x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """RandAugment on a uint8 batch (b 3 h w) for its draws (rand_augment_draws): layer by layer, each of the 15 ops
    on the images that drew it and apply it, at their own arguments (a loop over ops, not images)."""
    x = x.clone()
    for layer in range(draws["op"].shape[1]):
        for k, name in enumerate(RAND_AUGMENT_OPS):
            sel = (draws["op"][:, layer] == k) & draws["apply"][:, layer]
            if not sel.any():
                continue
            args = op_args(name, draws["magnitude"][sel, layer], draws["negate"][sel, layer])
            x[sel] = OPS[name](x[sel]) if args is None else OPS[name](x[sel], args)
    return x
