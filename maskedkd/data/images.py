"""Image data: the embedded "cluttered digits" set, and ImageFolder (ImageNet) with DeiT's recipe as timm builds it.

Cluttered digits: scikit-learn's bundled 1797 handwritten digits (8x8, 0..16), upsampled to 16x16 and pasted
near the centre of a larger canvas, with fragments of other digits as clutter and uniform noise. Train and test
draw from disjoint source digits (1400 / 397, a fixed seeded split). Where the digit lies matters, so ranking
patches by the student's attention is meaningful; most of the canvas is background or clutter, so a teacher
can be shown a fraction of it. Every draw is a pure function of its seed.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..checks import InputError, as_int, as_number

N_TRAIN_SOURCES = 1400  # of 1797 (78% train sources, 397 test sources); fixed by hand, no trial recorded its choice
DIGITS_MEAN, DIGITS_STD = 0.15, 0.25  # normalisation constants of the default recipe (measured, rounded)


@lru_cache(maxsize=4)
def _digit_sources(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 (n, size, size) in [0, 1] (bilinear upsampling of the 8x8 originals; 16: x2), and
    labels, in a fixed seeded order: the first N_TRAIN_SOURCES are the train sources, the rest the test sources."""
    from sklearn.datasets import load_digits
    if not 8 <= size <= 64:
        raise ValueError(f"digit size {size} px: expected 8 to 64 (the sources are 8x8)")
    d = load_digits()
    imgs = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    up = F.interpolate(imgs, size=(size, size), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1).numpy()
    order = np.random.default_rng(0).permutation(len(up))
    return up[order], d.target[order].astype(np.int64)


def check_scene(*, canvas: int = 32, digit_size: int = 16, jitter: int = 4, num_clutter: int = 3, noise: float = 0.15,
                copies: int = 1, distractors: int = 0, texture: float = 0.0) -> None:
    """A digit scene's options (cluttered_digits), checked alone and together; raises naming the values."""
    canvas = as_int(canvas, "canvas", "[8, inf)", "px")
    digit_size = as_int(digit_size, "digit_size", "[8, 64]", "px; the sources are 8x8")
    jitter = as_int(jitter, "jitter", "[0, inf)", "px")
    as_int(num_clutter, "num_clutter", "[0, inf)", "fragments of other digits")
    as_number(noise, "noise", "[0, 1]", "the uniform pixel noise level")
    copies = as_int(copies, "copies", "[1, inf)", "digits of the class")
    distractors = as_int(distractors, "distractors", "[0, inf)", "digits of another class")
    as_number(texture, "texture", "[0, 1]", "the amplitude of the smooth background texture")
    cells = (canvas // digit_size) ** 2
    grid = copies > 1 or distractors > 0
    if not grid and canvas < digit_size + 2 * jitter:
        raise InputError(f"canvas {canvas} is too small for a digit_size={digit_size} px digit with jitter={jitter}")
    if copies + distractors > cells or distractors >= copies:
        raise InputError(f"copies={copies} and distractors={distractors} must fit the {cells} cells of "
                         f"{digit_size} px on a {canvas} px canvas, with fewer distractors than copies")
    if grid and 2 * jitter > digit_size:
        raise InputError(f"jitter={jitter} px moves a digit of a grid scene (copies={copies}, distractors="
                         f"{distractors}) by more than half its cell (digit_size={digit_size}); at most "
                         f"{digit_size // 2}")


def cluttered_digits(split: str, n: int, seed: int, *, canvas: int = 32, jitter: int = 4, num_clutter: int = 3,
                     clutter_size: tuple[int, int] = (5, 9), noise: float = 0.15, normalize: bool = True,
                     digit_size: int = 16, copies: int = 1, distractors: int = 0,
                     texture: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 1, canvas, canvas) and labels (n,): a digit_size-px digit of `split` ("train"/"test" sources)
    at the centre +- jitter px, num_clutter crops (clutter_size px, of 16-px digits) of other digits anywhere,
    uniform noise in [0, noise]. copies > 1: that many digits of the class (different sources: other hands) in
    distinct cells of a grid of digit_size-px cells instead of one at the centre (jitter must be 0); distractors:
    that many whole digits of other classes (one class per image) in further cells: the label is the majority; jitter
    then moves each of them by up to that many px in each direction, clipped to the canvas (neighbours may overlap).
    texture > 0: a smooth random background of that amplitude (texture_background) under the digits and clutter,
    so that no patch is blank."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_scene(canvas=canvas, digit_size=digit_size, jitter=jitter, num_clutter=num_clutter, noise=noise,
                copies=copies, distractors=distractors, texture=texture)
    cells, grid = (canvas // digit_size) ** 2, copies > 1 or distractors > 0
    imgs, labels = _digit_sources(digit_size)
    clutter_src = _digit_sources(16)[0]
    src = slice(0, N_TRAIN_SOURCES) if split == "train" else slice(N_TRAIN_SOURCES, None)
    pool, pool_y, clutter_pool = imgs[src], labels[src], clutter_src[src]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    which = rng.integers(0, len(pool), n)
    out = rng.uniform(0, noise, (n, canvas, canvas)).astype(np.float32)
    if texture:  # its own stream: the digits, clutter and noise are those of the scene without texture
        back = texture_background(np.random.default_rng([seed, 0 if split == "train" else 1, 2]), n, canvas, texture)
        np.maximum(out, back, out=out)
    centre = (canvas - digit_size) // 2
    lo, hi = clutter_size
    for i in range(n):
        for _ in range(num_clutter):  # fragments of a random other-class digit from the same split
            j = rng.integers(0, len(pool))
            while pool_y[j] == pool_y[which[i]]:
                j = rng.integers(0, len(pool))
            h, w = rng.integers(lo, hi + 1, 2)
            sy, sx = rng.integers(0, 16 - h + 1), rng.integers(0, 16 - w + 1)
            ty, tx = rng.integers(0, canvas - h + 1), rng.integers(0, canvas - w + 1)
            np.maximum(out[i, ty:ty + h, tx:tx + w], clutter_pool[j, sy:sy + h, sx:sx + w],
                       out=out[i, ty:ty + h, tx:tx + w])
        if not grid:
            dy, dx = rng.integers(-jitter, jitter + 1, 2)
            places = [(centre + dy, centre + dx)]
            sources = [which[i]]
        else:
            side = canvas // digit_size
            places = [(c // side * digit_size, c % side * digit_size)
                      for c in rng.choice(cells, copies + distractors, replace=False)]
            same = np.flatnonzero(pool_y == pool_y[which[i]])
            sources = [which[i], *rng.choice(same, copies - 1)]
            if distractors:
                other = (pool_y[which[i]] + rng.integers(1, 10)) % 10
                sources += list(rng.choice(np.flatnonzero(pool_y == other), distractors))
            if jitter:  # drawn last and only when asked: a scene without jitter draws exactly what it drew before
                moves = rng.integers(-jitter, jitter + 1, (len(places), 2))
                places = [(int(np.clip(y0 + dy, 0, canvas - digit_size)), int(np.clip(x0 + dx, 0, canvas - digit_size)))
                          for (y0, x0), (dy, dx) in zip(places, moves)]
        for (y0, x0), j in zip(places, sources):
            np.maximum(out[i, y0:y0 + digit_size, x0:x0 + digit_size], pool[j],
                       out=out[i, y0:y0 + digit_size, x0:x0 + digit_size])
    x = torch.from_numpy(np.clip(out, 0, 1))[:, None]
    if normalize:
        x = (x - DIGITS_MEAN) / DIGITS_STD
    return x, torch.from_numpy(pool_y[which])


def texture_background(rng: np.random.Generator, n: int, canvas: int, amplitude: float) -> np.ndarray:
    """n smooth random backgrounds (n, canvas, canvas) in [0, amplitude]: uniform noise at 4, 8 and 16 px scales,
    bilinearly upsampled and weighted by their scale (coarser scales stronger, as in natural images' 1/f spectrum),
    summed and rescaled per image to span [0, amplitude]."""
    total = torch.zeros(n, 1, canvas, canvas)
    for cell in (4, 8, 16):
        coarse = torch.from_numpy(rng.uniform(0, 1, (n, 1, canvas // cell + 1, canvas // cell + 1)).astype(np.float32))
        total += cell * F.interpolate(coarse, size=(canvas, canvas), mode="bilinear", align_corners=True)
    lo, hi = total.amin((1, 2, 3), keepdim=True), total.amax((1, 2, 3), keepdim=True)
    return (amplitude * (total - lo) / (hi - lo).clamp_min(1e-6))[:, 0].numpy()


def clean_digits(split: str, n: int, seed: int, *, canvas: int = 32, normalize: bool = True, digit_size: int = 16,
                 copies: int = 1):
    """Centred digits without clutter or noise: the teacher's warm-up data (the project's early trials, not in this
    repository: it helps a ViT
    leave the chance plateau)."""
    return cluttered_digits(split, n, seed, canvas=canvas, jitter=0, num_clutter=0, noise=0.0,
                            normalize=normalize, digit_size=digit_size, copies=copies)


# ----------------------------------------------------------------------------------------------------------
# ImageNet-style folders with DeiT's recipe [docs/paper.md#recipe], built by timm from the arguments DeiT's main.py
# passes
# (datasets.py build_transform, main.py Mixup). timm is imported inside these functions only, so the core package
# imports without it. One deliberate difference: for input_size <= 32 DeiT's build_transform swaps the random
# resized crop for RandomCrop(pad 4) and evaluates without resize or crop (its CIFAR path); here every size takes
# the ImageNet path, so small test images of any size still give img_size inputs.

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's IMAGENET_DEFAULT_*, DeiT's
DEIT_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"  # DeiT's --aa
DEIT_CROP_PCT = 0.875  # DeiT's --eval-crop-ratio: resize to 224 / 0.875 = 256, centre crop 224


def _timm_data():
    try:
        import timm.data
    except ImportError as e:  # a runtime dependency since the recipe is timm's; the core imports without it
        raise ImportError("the ImageFolder DeiT recipe needs timm: pip install timm==1.0.31") from e
    return timm.data


POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")  # timm's RandAugment op names


def posterize_keeping_zero_bits(img, bits_to_keep: int, **_):
    """timm's posterize op with the result DeiT's environment gave for 0 bits: a black image.

    `rand-m9-mstd0.5-inc1` draws the magnitude from N(9, 0.5) clipped to 10, and PosterizeIncreasing keeps 4 - level
    bits, so a draw at the top of the range (about 2% of posterize calls, ~0.15% of images) keeps 0 bits. Pillow
    before 13 masked every pixel with ~255, giving all zeros; Pillow 13 raises ValueError instead, which kills a
    DataLoader worker and the run. DeiT trained with the old behaviour, so we reproduce it rather than clamp to 1 bit.
    The mask is the one Pillow applies, so 1..7 bits stay Pillow's own result."""
    from PIL import ImageOps
    if bits_to_keep >= 8:
        return img
    if bits_to_keep == 0:
        return img.point([0] * (256 * len(img.getbands())))
    return ImageOps.posterize(img, bits_to_keep)


def _with_zero_bit_posterize(transform):
    """Point every posterize op of the RandAugment inside a timm Compose at posterize_keeping_zero_bits."""
    ops = [op for t in getattr(transform, "transforms", ()) for op in getattr(t, "ops", ())
           if getattr(op, "name", None) in POSTERIZE_OPS]
    if not ops:  # DeiT's recipe has PosterizeIncreasing: a timm whose transform hides it must not pass unpatched
        raise RuntimeError(f"no posterize op found in timm's transform {transform}: cannot apply DeiT's 0-bit result")
    for op in ops:
        op.aug_fn = posterize_keeping_zero_bits
    return transform


def deit_train_transform(img_size: int = 224, uint8: bool = False, randaugment: bool = True):
    """PIL image -> (3 img_size img_size) float, DeiT's training transform as timm builds it for DeiT's arguments:
    RandomResizedCropAndInterpolation (scale 0.08-1, ratio 3/4-4/3, bicubic), horizontal flip 0.5, timm
    RandAugment `rand-m9-mstd0.5-inc1` (2 of the 15 increasing-severity ops, drawn with replacement, each applied
    with p 0.5 at magnitude N(9, 0.5) clipped to [0, 10] on timm's 10-level scale; mean-pixel fill, bicubic),
    to tensor, normalise (IMAGENET_DEFAULT_MEAN / STD), RandomErasing (p 0.25, per-pixel normal values, 1 box).
    DeiT passes colour jitter 0.3 too; timm drops it when RandAugment is on, as it does for DeiT. Posterize at
    0 bits gives a black image, as under DeiT's Pillow (posterize_keeping_zero_bits), on any Pillow.
    uint8=True: timm's prefetcher path (`use_prefetcher=True`): the same ops up to a uint8 (3 img_size img_size)
    tensor; normalisation and random erasing are left to the device (device_normalise, device_erasing).
    randaugment=False (with uint8): the crop and the flip alone, RandAugment left to the device too
    (device_ops.rand_augment); no colour jitter either way, as timm builds DeiT's recipe."""
    if not randaugment:
        if not uint8:
            raise ValueError("randaugment=False leaves RandAugment to the device: it needs uint8=True")
        return _timm_data().create_transform(input_size=img_size, is_training=True, color_jitter=None,
                                             auto_augment=None, interpolation="bicubic", use_prefetcher=True)
    return _with_zero_bit_posterize(_timm_data().create_transform(
        input_size=img_size, is_training=True, color_jitter=0.3, auto_augment=DEIT_AUTO_AUGMENT,
        interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1, use_prefetcher=uint8))


def device_normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (b 3 h w) -> float, normalised with ImageNet's mean and std as timm's PrefetchLoader does it
    ((x - 255 mean) / (255 std)): the worker's ToTensor + Normalize, on the batch's device."""
    mean = torch.tensor([255 * m for m in IMAGENET_MEAN], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([255 * s for s in IMAGENET_STD], device=x.device).view(1, 3, 1, 1)
    return x.float().sub_(mean).div_(std)


def device_erasing(device):
    """DeiT's random erasing (p 0.25, per-pixel normal values, one box) on a normalised batch on `device`, as timm's
    PrefetchLoader applies it: timm's RandomErasing in batch mode (a box per image drawn from python's RNG, its
    values from torch's on the device)."""
    from timm.data.random_erasing import RandomErasing
    return RandomErasing(probability=0.25, mode="pixel", max_count=1, device=str(device))


def deit_eval_transform(img_size: int = 224, crop_pct: float = DEIT_CROP_PCT):
    """PIL image -> (3 img_size img_size) float: resize the short side to floor(img_size / 0.875) (256 for 224),
    bicubic, centre crop img_size, to tensor, normalise. timm's eval transform; equal to the torchvision pipeline
    DeiT's datasets.py writes by hand (tests/test_images.py)."""
    return _timm_data().create_transform(input_size=img_size, is_training=False, crop_pct=crop_pct,
                                         interpolation="bicubic")


def load_rgb(path: str):
    """An image file as an RGB PIL image: torchvision's default loader (open, convert to RGB: what DeiT's ImageFolder
    does), except that 16-bit greyscale (PNG mode I;16), which that conversion clips at 255 (a mid grey turns white),
    keeps its brightness (the top 8 bits), and an unreadable file raises naming it (a DataLoader worker's error
    otherwise names no file)."""
    from PIL import Image
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            if img.mode in ("I;16", "I;16L", "I;16B"):
                img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise OSError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def image_folder(root: str | Path, split: str, img_size: int = 224, uint8: bool = False, randaugment: bool = True):
    """torchvision ImageFolder at root/split (train or val) with the DeiT train or eval transform (files read by
    load_rgb); uint8, randaugment: the training transform's device paths (deit_train_transform)."""
    from torchvision.datasets import ImageFolder
    path = Path(root) / split
    if not path.is_dir():
        raise FileNotFoundError(f"data folder not found: {path} (expected {root}/train and {root}/val)")
    try:
        ds = ImageFolder(str(path), transform=deit_train_transform(img_size, uint8, randaugment) if split == "train"
                         else deit_eval_transform(img_size), loader=load_rgb)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no images in data folder {path}: {e}") from e
    if len(ds) == 0:
        raise FileNotFoundError(f"no images in data folder {path}")
    return ds


def mixup_cutmix(num_classes: int):
    """timm's Mixup with DeiT's arguments: per batch, MixUp (alpha 0.8) or CutMix (alpha 1.0), switch p 0.5,
    always on, label smoothing 0.1; (x (b c h w), y (b,)) -> (x mixed in place, soft y (b C)). It draws from
    numpy's global RNG and needs an even batch."""
    return _timm_data().Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                              mode="batch", label_smoothing=0.1, num_classes=num_classes)


def random_shift(x: torch.Tensor, max_shift: int, fill: float = -DIGITS_MEAN / DIGITS_STD) -> torch.Tensor:
    """x (b c h w) -> each image moved by its own (dy, dx), both uniform in [-max_shift, max_shift], the uncovered
    border filled with `fill` (the digit canvas's black, normalised): RandomCrop(h, padding=max_shift) as CIFAR's
    recipe pads and crops, for a whole batch at once. Draws from torch's global generator: call it under
    seeded_rngs."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (b, 1)) for _ in range(2))
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)  # (b h), (b w): each image's window in the padding
    return rearrange(padded, "b c H W -> b H W c")[torch.arange(b)[:, None, None], rows[:, :, None],
                                                   cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def batch_augmentation(num_classes: int):
    """DeiT's augmentation of a whole in-memory batch (x (b c h w) normalised, y (b,)) -> (x, soft y (b C)):
    timm's RandomErasing (p 0.25, per-pixel normal noise, one box per image, as DeiT's `--reprob`) on each image,
    then DeiT's MixUp/CutMix with label smoothing 0.1 (mixup_cutmix). Draws from python's, numpy's and torch's
    global RNGs: call it under seeded_rngs."""
    _timm_data()
    from timm.data.random_erasing import RandomErasing
    erase = RandomErasing(probability=0.25, mode="pixel", max_count=1, device="cpu")
    mix = mixup_cutmix(num_classes)

    def augment(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mix(erase(x), y)
    return augment


@contextmanager
def seeded_rngs(entropy, restore: bool = True):
    """Seed python's `random`, numpy's global RNG and torch's CPU generator from `entropy` (ints, via numpy's
    SeedSequence) for the block, then (restore=True) put their states back: a draw that depends on its key only."""
    s = np.random.SeedSequence(list(entropy)).generate_state(4, dtype=np.uint32)
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state()) if restore else None
    random.seed(int(s[0]) << 32 | int(s[1]))
    np.random.seed(s)
    torch.default_generator.manual_seed(int(s[2]) << 31 | int(s[3]) >> 1)  # CPU only: torch.manual_seed is 100x slower
    try:
        yield
    finally:
        if states is not None:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


class SeededItems(torch.utils.data.Dataset):
    """dataset[(i, entropy)] = dataset[i] transformed under seeded_rngs(entropy): each sample's augmentation is a
    function of its key alone, not of the worker that loads it, the worker count, or the epochs before (timm's
    transforms draw from python's `random`, numpy and torch). In the main process (num_workers=0) the global RNG
    states are restored after each sample; worker processes skip that (their RNGs serve nothing else)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        i, entropy = key
        with seeded_rngs(entropy, restore=torch.utils.data.get_worker_info() is None):
            return self.dataset[i]


class RepeatAugSampler(torch.utils.data.Sampler):
    """DeiT's repeated augmentation [docs/paper.md#recipe]: each index `repeats` times per epoch, shuffled by
    (seed, epoch), split over ranks; an epoch is floor(len / 256) * 256 samples over all ranks (DeiT's RASampler
    length). `start` skips the first samples of this rank's epoch, for exact resume. keyed=True yields
    (index, (seed, epoch, position)) for SeededItems, position being the sample's place in the epoch's list over
    all ranks: the copies of an image (neighbouring positions, so neighbouring ranks) get different
    augmentations, and a sample's augmentation does not depend on where the epoch was resumed."""

    def __init__(self, n: int, *, num_replicas: int = 1, rank: int = 0, repeats: int = 3, seed: int = 0,
                 keyed: bool = False):
        self.n, self.world, self.rank, self.repeats, self.seed = n, num_replicas, rank, repeats, seed
        self.keyed = keyed
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
        idx = self.indices()
        if not self.keyed:
            return iter(idx[self.start:])
        pos = range(self.rank + self.start * self.world, self.total, self.world)
        return ((i, (self.seed, self.epoch, p)) for i, p in zip(idx[self.start:], pos))

    def __len__(self) -> int:
        return self.per_rank - self.start
