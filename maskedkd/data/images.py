"""Image data: the embedded "cluttered digits" set, and ImageFolder (ImageNet) with the DeiT recipe.

Cluttered digits: scikit-learn's bundled 1797 handwritten digits (8x8, 0..16), upsampled to 16x16 and pasted
near the centre of a larger canvas, with fragments of other digits as clutter and uniform noise. Train and test
draw from disjoint source digits (1400 / 397, a fixed seeded split). Where the digit lies matters, so ranking
patches by the student's attention is meaningful; most of the canvas is background or clutter, so a teacher
can be shown a fraction of it. Every draw is a pure function of its seed.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

N_TRAIN_SOURCES = 1400  # of 1797 [FEASIBILITY.md trials]
DIGITS_MEAN, DIGITS_STD = 0.15, 0.25  # normalisation constants of the default recipe (measured, rounded)


@lru_cache(maxsize=1)
def _digit_sources() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 (n, 16, 16) in [0, 1] (bilinear x2 upsampling), and labels, in a fixed
    seeded order: the first N_TRAIN_SOURCES are the train sources, the rest the test sources."""
    from sklearn.datasets import load_digits
    d = load_digits()
    imgs = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    up = F.interpolate(imgs, scale_factor=2, mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()
    order = np.random.default_rng(0).permutation(len(up))
    return up[order], d.target[order].astype(np.int64)


def cluttered_digits(split: str, n: int, seed: int, *, canvas: int = 32, jitter: int = 4, num_clutter: int = 3,
                     clutter_size: tuple[int, int] = (5, 9), noise: float = 0.15, normalize: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 1, canvas, canvas) and labels (n,): a digit of `split` ("train"/"test" sources) at the
    centre +- jitter px, num_clutter crops of other digits anywhere, uniform noise in [0, noise]."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if canvas < 16 + 2 * jitter:
        raise ValueError(f"canvas {canvas} is too small for a 16 px digit with jitter {jitter}")
    imgs, labels = _digit_sources()
    src = slice(0, N_TRAIN_SOURCES) if split == "train" else slice(N_TRAIN_SOURCES, None)
    pool, pool_y = imgs[src], labels[src]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    which = rng.integers(0, len(pool), n)
    out = rng.uniform(0, noise, (n, canvas, canvas)).astype(np.float32)
    centre = (canvas - 16) // 2
    lo, hi = clutter_size
    for i in range(n):
        for _ in range(num_clutter):  # fragments of a random other-class digit from the same split
            j = rng.integers(0, len(pool))
            while pool_y[j] == pool_y[which[i]]:
                j = rng.integers(0, len(pool))
            h, w = rng.integers(lo, hi + 1, 2)
            sy, sx = rng.integers(0, 16 - h + 1), rng.integers(0, 16 - w + 1)
            ty, tx = rng.integers(0, canvas - h + 1), rng.integers(0, canvas - w + 1)
            np.maximum(out[i, ty:ty + h, tx:tx + w], pool[j, sy:sy + h, sx:sx + w], out=out[i, ty:ty + h, tx:tx + w])
        dy, dx = rng.integers(-jitter, jitter + 1, 2)
        y0, x0 = centre + dy, centre + dx
        np.maximum(out[i, y0:y0 + 16, x0:x0 + 16], pool[which[i]], out=out[i, y0:y0 + 16, x0:x0 + 16])
    x = torch.from_numpy(np.clip(out, 0, 1))[:, None]
    if normalize:
        x = (x - DIGITS_MEAN) / DIGITS_STD
    return x, torch.from_numpy(pool_y[which])


def clean_digits(split: str, n: int, seed: int, *, canvas: int = 32, normalize: bool = True):
    """Centred digits without clutter or noise: the teacher's warm-up data (FEASIBILITY.md: it helps a ViT
    leave the chance plateau)."""
    return cluttered_digits(split, n, seed, canvas=canvas, jitter=0, num_clutter=0, noise=0.0,
                            normalize=normalize)


# ----------------------------------------------------------------------------------------------------------
# ImageNet-style folders with the DeiT recipe [digest 3.2], built from torchvision's transforms v2.

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def deit_train_transform(img_size: int = 224):
    """RandomResizedCrop (0.08-1, bicubic), flip, RandAugment (2 ops, magnitude 9), normalise, RandomErasing 0.25
    with per-pixel random values. torchvision's RandAugment has no magnitude noise: DeiT's `mstd0.5` is not
    reproduced (the one recipe difference)."""
    from torchvision.transforms import v2
    return v2.Compose([
        v2.RandomResizedCrop(img_size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandAugment(num_ops=2, magnitude=9, interpolation=v2.InterpolationMode.BILINEAR),
        v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        v2.RandomErasing(p=0.25, value="random"),
    ])


def deit_eval_transform(img_size: int = 224, crop_ratio: float = 0.875):
    """Resize to img_size / 0.875 (256 for 224), bicubic, then centre crop img_size."""
    from torchvision.transforms import v2
    return v2.Compose([
        v2.Resize(int(math.floor(img_size / crop_ratio)), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(img_size), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def image_folder(root: str | Path, split: str, img_size: int = 224):
    """torchvision ImageFolder at root/split (train or val) with the DeiT train or eval transform."""
    from torchvision.datasets import ImageFolder
    path = Path(root) / split
    if not path.is_dir():
        raise FileNotFoundError(f"data folder not found: {path} (expected {root}/train and {root}/val)")
    try:
        ds = ImageFolder(str(path), transform=deit_train_transform(img_size) if split == "train"
                         else deit_eval_transform(img_size))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no images in data folder {path}: {e}") from e
    if len(ds) == 0:
        raise FileNotFoundError(f"no images in data folder {path}")
    return ds


def mixup_cutmix(num_classes: int, *, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1):
    """Batch transform (x (b c h w), y (b,)) -> (x, soft y (b C)): MixUp 0.8 or CutMix 1.0 (switch 0.5), then
    label smoothing 0.1, as DeiT [digest 3.2]. Smoothing the mixed one-hot equals timm's smooth-then-mix."""
    from torchvision.transforms import v2
    mix = v2.RandomChoice([v2.MixUp(alpha=mixup_alpha, num_classes=num_classes),
                           v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)],
                          p=[1 - switch_prob, switch_prob])

    def apply(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = mix(x, y)
        return x, y * (1 - label_smoothing) + label_smoothing / num_classes
    return apply


class RepeatAugSampler(torch.utils.data.Sampler):
    """DeiT's repeated augmentation [digest 3.2]: each index `repeats` times per epoch, shuffled by
    (seed, epoch), split over ranks; an epoch is floor(len / 256) * 256 samples over all ranks (DeiT's RASampler
    length). `start` skips the first samples of this rank's epoch, for exact resume."""

    def __init__(self, n: int, *, num_replicas: int = 1, rank: int = 0, repeats: int = 3, seed: int = 0):
        self.n, self.world, self.rank, self.repeats, self.seed = n, num_replicas, rank, repeats, seed
        self.epoch, self.start = 0, 0
        self.total = int(math.ceil(n * repeats / num_replicas)) * num_replicas
        self.per_rank = max(1, (n // 256 * 256) // num_replicas) if n >= 256 else int(math.ceil(n / num_replicas))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        idx = torch.randperm(self.n, generator=g).repeat_interleave(self.repeats).tolist()
        idx += idx[: self.total - len(idx)]
        return idx[self.rank: self.total: self.world][: self.per_rank]

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start
