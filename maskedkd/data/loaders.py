"""Batches for the training program: deterministic per (seed, epoch), sharded over ranks, resumable mid-epoch.

Each source gives
- `num_classes`, `steps_per_epoch`;
- `train_batches(epoch, start=0)`: this rank's share of every global batch of the epoch from batch `start` on, as
  CPU (x, y int64) pairs (pinned when CUDA is available);
- `to_device(x, y, device) -> (x, y)`: the non-blocking host-to-device copy of a training batch, then, for
  ImageFolder with mixup, timm's MixUp/CutMix on the device (y becomes soft, (b C)), as DeiT's engine does;
- `teacher_rows(epoch, start, logits_of)`: for a source whose training batches are rows of an in-memory pool
  without augmentation (digits, sound events), an iterator over the rows of `logits_of(pool)` that make each batch
  train_batches gives, `logits_of` called once per pool and kept by the source (a full teacher's logits, computed
  once instead of at every step: maskedkd.train.pool_logits); None for a source that augments per sample;
- `eval_batches()`: this rank's shard of the evaluation set, (x, y int64) CPU batches; the shards of the `world`
  ranks are disjoint and cover the set exactly once (no padding), so summing correct and total counts over ranks
  gives the exact accuracy; `eval_size` is the size of the whole set.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator

import torch

from .cache import cache_dir
from .images import (RepeatAugSampler, SeededItems, batch_augmentation, clean_digits, cluttered_digits, device_erasing,
                     device_normalise, image_folder, mixup_cutmix, random_shift, seeded_rngs)

DIGITS_TEST_SEED = 12345  # one fixed test set for every run, seeds and configs alike


def sharded_indices(n: int, cfg, rank: int, world: int, epoch: int, start: int, steps: int) -> Iterator[torch.Tensor]:
    """Rows of this rank's share of each global batch of a (seed, epoch) permutation of n in-memory rows, from
    `start`."""
    b = cfg.batch_size
    per = b // world
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
    for s in range(start, steps):
        yield perm[s * b: (s + 1) * b][rank * per: (rank + 1) * per]


def sharded_batches(x, y, cfg, rank: int, world: int, epoch: int, start: int, steps: int):
    """(x, y) of each of sharded_indices' batches."""
    for idx in sharded_indices(len(x), cfg, rank, world, epoch, start, steps):
        yield x[idx], y[idx]


def to_device(x: torch.Tensor, y: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) copied to `device` without blocking the host (asynchronous from pinned memory)."""
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def eval_shard(x, y, rank: int, world: int, batch: int):
    """Batches of this rank's strided shard x[rank::world] of an in-memory evaluation set."""
    x, y = x[rank::world], y[rank::world]
    return [(x[i: i + batch], y[i: i + batch]) for i in range(0, len(x), batch)]


def noisy_labels(y: torch.Tensor, rate: float, seed: int, num_classes: int = 10) -> torch.Tensor:
    """y with each label replaced, with probability `rate`, by a uniformly drawn other class (symmetric label
    noise), a pure function of (y, rate, seed)."""
    g = torch.Generator().manual_seed(seed * 7 + 3)
    flip = torch.rand(len(y), generator=g) < rate
    shift = torch.randint(1, num_classes, (len(y),), generator=g)
    return torch.where(flip, (y + shift) % num_classes, y)


def scene(cfg) -> dict:
    """The cluttered_digits arguments a config's digit scene sets."""
    return dict(digit_size=cfg.digit_size, jitter=cfg.jitter, num_clutter=cfg.num_clutter, noise=cfg.noise,
                copies=cfg.copies, distractors=cfg.distractors, texture=cfg.texture)


class InMemoryData:
    """A source whose training set is an in-memory pool per epoch (`epoch_set(epoch) -> (key, (x, y))`: the same key,
    the same pool, made once per key), batched by a (seed, epoch) permutation sharded over ranks, optionally augmented
    per step (`augment(x, y) -> (x, y)`, seeded by (seed, rank, epoch, step)), with a fixed test set
    (`test_set() -> (x, y)`, made at the first evaluation). DigitsData and TensorData only say how their sets are
    made. Without augmentation a full teacher's logits of a pool are computed once (teacher_rows)."""

    def __init__(self, cfg, num_classes: int, train_size: int, epoch_set, test_size: int, test_set, rank: int = 0,
                 world: int = 1, augment=None, eval_batch: int = 500):
        self.cfg, self.rank, self.world, self.num_classes = cfg, rank, world, num_classes
        self.train_size, self._epoch_set, self._test_set = train_size, epoch_set, test_set
        self.eval_size = test_size  # the whole evaluation set's size (each rank evaluates its shard)
        self._augment, self._eval_batch = augment, eval_batch
        self.steps_per_epoch = train_size // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{train_size} training examples give no full batch of {cfg.batch_size}")
        self._train: tuple | None = None  # (key, (x, y)) of the last epoch's pool
        self._test: tuple | None = None
        self._pool_memo: tuple | None = None  # (pool key, logits_of(pool))

    def epoch_data(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = self.pool_key(epoch)
        if self._train is None or self._train[0] != key:
            self._train = key, self._epoch_set(epoch)
        return self._train[1]

    def pool_key(self, epoch: int):
        return self._epoch_set.key(epoch) if hasattr(self._epoch_set, "key") else 0

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.epoch_data(epoch)
        batches = sharded_batches(x, y, self.cfg, self.rank, self.world, epoch, start, self.steps_per_epoch)
        return batches if self._augment is None else self._augmented(batches, epoch, start)

    def _augmented(self, batches, epoch: int, start: int):
        for i, (x, y) in enumerate(batches):
            with seeded_rngs((self.cfg.seed, self.rank, epoch, start + i)):
                yield self._augment(x, y)

    def teacher_rows(self, epoch: int, start: int, logits_of) -> Iterator[torch.Tensor] | None:
        """The rows of `logits_of(pool)` that make each batch train_batches gives, logits_of called once per pool and
        kept; None when batches are augmented per step (no pool whose logits could be computed once)."""
        if self._augment is not None:
            return None
        key, pool = self.pool_key(epoch), self.epoch_data(epoch)[0]
        if self._pool_memo is None or self._pool_memo[0] != key:
            self._pool_memo = key, logits_of(pool)
        logits = self._pool_memo[1]
        return (logits[idx.to(logits.device)] for idx in self.train_indices(epoch, start))

    def train_indices(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        return sharded_indices(self.train_size, self.cfg, self.rank, self.world, epoch, start, self.steps_per_epoch)

    to_device = staticmethod(to_device)

    def test_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._test is None:
            self._test = self._test_set()
        return self._test

    def eval_batches(self, batch: int | None = None):
        return eval_shard(*self.test_data(), self.rank, self.world, batch or self._eval_batch)


class _DigitsEpochs:
    """A digits config's training set per epoch: clean centred digits for the first clean_epochs, then a clutter draw
    (a new one every epoch, or one fixed draw), label noise on the cluttered ones."""

    def __init__(self, cfg):
        self.cfg = cfg

    def key(self, epoch: int) -> int:
        """Which draw an epoch trains on: a fixed set's epochs share one."""
        return epoch if self.cfg.fresh_clutter or epoch < self.cfg.clean_epochs else self.cfg.clean_epochs

    def __call__(self, epoch: int):
        cfg, clean, draw = self.cfg, epoch < self.cfg.clean_epochs, self.key(epoch)
        seed = cfg.seed * 100_003 + draw
        if clean:
            return clean_digits("train", cfg.train_size, seed, digit_size=cfg.digit_size, copies=cfg.copies)
        made = cluttered_digits("train", cfg.train_size, seed, **scene(cfg))
        return (made[0], noisy_labels(made[1], cfg.label_noise, seed)) if cfg.label_noise else made


class DigitsData(InMemoryData):
    """The embedded digit scenes: train_size images per epoch (_DigitsEpochs), moved per sample with cfg.shift and
    DeiT's batch augmentation with cfg.batch_aug (on a copy: the pool is never changed in place), fixed test images
    from disjoint source digits."""

    def __init__(self, cfg, rank: int = 0, world: int = 1):
        if cfg.batch_aug and (cfg.batch_size // world) % 2:
            raise ValueError(f"batch_aug needs an even batch per process (MixUp pairs each image with its mirror): "
                             f"batch_size={cfg.batch_size} over {world} process(es)")
        mix = batch_augmentation(10) if cfg.batch_aug else None

        def aug(x, y):  # a new tensor: the pool is never changed in place
            x = random_shift(x, cfg.shift) if cfg.shift else x.clone()
            return (x, y) if mix is None else mix(x, y)
        super().__init__(cfg, 10, cfg.train_size, _DigitsEpochs(cfg), cfg.test_size,
                         lambda: cluttered_digits("test", cfg.test_size, DIGITS_TEST_SEED, **scene(cfg)), rank, world,
                         augment=aug if cfg.batch_aug or cfg.shift else None, eval_batch=500)

    def draw(self, epoch: int) -> int:
        return self.pool_key(epoch)


class FolderData:
    """ImageFolder (data_path/train, data_path/val) with DeiT's recipe: repeated augmentation over ranks, timm's
    training transform per image (seeded per sample by (seed, epoch, position), see RepeatAugSampler), MixUp/CutMix
    + label smoothing on the device in `to_device` (seeded by (seed, rank, epoch, step)), resize-256 /
    centre-crop-224 evaluation sharded over ranks. Both DataLoaders are built once (workers persist across
    epochs); a resumed epoch (`train_batches(epoch, start)`) gives exactly the batches the uninterrupted one gave."""

    def __init__(self, cfg, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        size = cfg.img_size or 224
        self.train_set = image_folder(cfg.data_path, "train", size, uint8=cfg.device_aug,
                                      randaugment=not cfg.device_randaug)
        self._erase = {}  # device -> device_erasing(device), with cfg.device_aug
        self.val_set = image_folder(cfg.data_path, "val", size)
        if self.val_set.classes != self.train_set.classes:
            tr, va = self.train_set.classes, self.val_set.classes
            only_t, only_v = sorted(set(tr) - set(va)), sorted(set(va) - set(tr))
            raise ValueError(f"the class folders of {cfg.data_path}/train and {cfg.data_path}/val differ: only in "
                             f"train {only_t[:10]}{' ...' if len(only_t) > 10 else ''} ({len(only_t)}), only in val "
                             f"{only_v[:10]}{' ...' if len(only_v) > 10 else ''} ({len(only_v)})")
        self.num_classes = len(self.train_set.classes)
        self.per_rank = cfg.batch_size // world
        if cfg.mixup and self.per_rank % 2:
            raise ValueError(f"mixup needs an even batch per process (timm's Mixup mixes each sample with its mirror "
                             f"in the batch): batch_size={cfg.batch_size} over {world} process(es) gives "
                             f"{self.per_rank}")
        self.sampler = RepeatAugSampler(len(self.train_set), num_replicas=world, rank=rank,
                                        repeats=max(1, cfg.repeated_aug), seed=cfg.seed, keyed=True)
        self.steps_per_epoch = len(self.sampler) // self.per_rank
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.train_set)} training images give no full batch of {self.per_rank}")
        self.mix = mixup_cutmix(self.num_classes) if cfg.mixup else None
        workers = dict(num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                       pin_memory=torch.cuda.is_available())
        # augmentation is seeded per sample (SeededItems); a private generator keeps the loader's worker base seed
        # off torch's global RNG, which the training step uses
        self.train_loader = torch.utils.data.DataLoader(
            SeededItems(self.train_set), batch_size=self.per_rank, sampler=self.sampler, drop_last=True,
            generator=torch.Generator().manual_seed(cfg.seed * 7919 + rank), **workers)
        self.eval_loader = torch.utils.data.DataLoader(
            self.val_set, batch_size=int(1.5 * self.per_rank), sampler=range(rank, len(self.val_set), world),
            drop_last=False, generator=torch.Generator().manual_seed(0), **workers)
        self._yielded: deque = deque(maxlen=4)  # (x, (epoch, step)) of the last training batches handed out

    @property
    def eval_size(self) -> int:
        return len(self.val_set)

    def train_batches(self, epoch: int, start: int = 0):
        self.sampler.set_epoch(epoch, start * self.per_rank)
        self._yielded.clear()
        for i, (x, y) in enumerate(self.train_loader):
            if start + i >= self.steps_per_epoch:
                break
            self._yielded.append((x, (epoch, start + i)))
            yield x, y

    def to_device(self, x: torch.Tensor, y: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-blocking copy; then, for a batch that train_batches handed out and mixup on, timm's Mixup on
        the device with numpy's RNG seeded by (seed, rank, epoch, step) (its state is restored after). With device_aug
        (uint8 batches) first RandAugment (device_randaug), normalisation and erasing, seeded by the same step: the
        device's draws follow the step and the image's place in the batch, not the sample's own key as the workers'
        do, so another world size or batch split draws others."""
        key = next((k for t, k in self._yielded if t is x), None)
        if key is None and x.dtype == torch.uint8:
            raise ValueError("a uint8 training batch that train_batches did not hand out (a copy?): its step is unknown, "
                             "so it cannot be augmented on the device; pass the batch itself")
        x, y = to_device(x, y, device)
        if key is None or (self.mix is None and not self.cfg.device_aug):
            return x, y
        with seeded_rngs((self.cfg.seed, self.rank, *key)), torch.random.fork_rng(
                devices=[device] if device.type == "cuda" else [], enabled=device.type == "cuda"):
            if self.cfg.device_aug:  # uint8 from the workers: normalise and erase here, before MixUp / CutMix
                import numpy as np
                seed = int(np.random.SeedSequence([self.cfg.seed, self.rank, *key, 1]).generate_state(1, np.uint64)[0]
                           >> np.uint64(1))
                if device.type == "cuda":  # erasing's values come from the device's generator: seed it by the step
                    torch.cuda.manual_seed(seed)
                if self.cfg.device_randaug:  # RandAugment first, drawn per image from this step's seed
                    from .device_ops import rand_augment, rand_augment_draws
                    g = torch.Generator(device).manual_seed(seed)
                    x = rand_augment(x, rand_augment_draws(x.shape[0], g, device=device))
                if str(device) not in self._erase:
                    self._erase[str(device)] = device_erasing(device)
                x = self._erase[str(device)](device_normalise(x))
            return (x, y) if self.mix is None else self.mix(x, y)

    def eval_batches(self):
        return self.eval_loader

    def teacher_rows(self, epoch: int, start: int, logits_of) -> None:
        return None  # augmented per sample: no pool whose logits could be computed once


class TensorData(InMemoryData):
    """A fixed in-memory set (the synthetic sound events, or one ESC-50 fold split): one pool for every epoch. With
    cfg.freq_mask / time_mask, SpecAugment (data.audio.SpecAugment, masked bands set to `mask_value`, the normalised
    fbank's zero) on each training batch."""

    def __init__(self, cfg, tensors: dict[str, torch.Tensor], num_classes: int, rank: int = 0, world: int = 1,
                 mask_value: float | None = None):
        self.t = tensors
        aug = None
        if cfg.freq_mask or cfg.time_mask:
            if mask_value is None:
                raise ValueError("SpecAugment (freq_mask / time_mask) needs the mask value of this data's fbank "
                                 "normalisation")
            from .audio import SpecAugment
            bins, frames = tensors["x_train"].shape[-1], tensors["x_train"].shape[-2]
            if cfg.freq_mask > bins or cfg.time_mask > frames:
                raise ValueError(f"freq_mask={cfg.freq_mask} / time_mask={cfg.time_mask} exceed the clips' "
                                 f"{bins} bins / {frames} frames")
            spec = SpecAugment(freq_mask=cfg.freq_mask, time_mask=cfg.time_mask, mask_value=mask_value)
            aug = lambda x, y: (spec(x), y)  # noqa: E731
        super().__init__(cfg, num_classes, len(tensors["y_train"]), lambda epoch: (tensors["x_train"], tensors["y_train"]),
                         len(tensors["y_test"]), lambda: (tensors["x_test"], tensors["y_test"]), rank, world,
                         augment=aug, eval_batch=250)


SOUNDS_SEED = 0  # one fixed synthetic sound set for every run


def sound_split(split: str, n: int, events: int, seed: int = SOUNDS_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of one split of the synthetic sound set (sounds.synthetic_sound_events), kept in the data cache
    (cache.cache_dir()/data) once made, instead of remaking its fbanks in every training process of a table. A
    clip depends on (seed, split, index) alone, so a split is cached by its size; the key also holds the generator's
    source and the torch, torchaudio and numpy versions that shape the fbank, so a change to any of them makes a new
    entry instead of reading a stale one. A cache file that does not hold the split's tensors raises, naming it."""
    import hashlib
    import json
    from pathlib import Path

    import numpy
    import torchaudio
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from ..checkpoint import atomic_write
    from . import audio, sounds
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected 'train' or 'test'")
    source = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (sounds, audio))).hexdigest()
    key = hashlib.sha256(json.dumps([source, torch.__version__, torchaudio.__version__, numpy.__version__]).encode())
    path = cache_dir() / "data" / f"sounds-{split}-n{n}-events{events}-seed{seed}-{key.hexdigest()[:12]}.safetensors"
    if path.is_file():
        try:
            t = load_file(path)
            x, y = t["x"], t["y"]
        except (SafetensorError, KeyError, OSError) as e:
            raise ValueError(f"sound-set cache file {path} is unreadable ({e}): delete it to make it again") from e
        if x.shape[0] != n or y.shape != (n,) or x.dtype != torch.float32 or y.dtype != torch.long:
            raise ValueError(f"sound-set cache file {path} holds x {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)} "
                             f"{y.dtype}, not the {n} clips of its name: delete it to make it again")
        return x, y
    t = sounds.synthetic_sound_events(n_train=n if split == "train" else 0, n_test=n if split == "test" else 0,
                                     seed=seed, events=events)
    x, y = t[f"x_{split}"].contiguous(), t[f"y_{split}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file({"x": x, "y": y}, tmp))
    return x, y


def fixed_test_set(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed test set a TrainConfig names, (x, y) whole, as build_data(cfg).eval_batches gives it in one batch; for
    the synthetic sound set without making its train split."""
    if cfg.data == "sounds":
        return sound_split("test", cfg.test_size, cfg.events)
    (x, y), = build_data(cfg).eval_batches(batch=10**9)
    return x, y


def build_data(cfg, rank: int = 0, world: int = 1):
    """The data source a TrainConfig names: digits, imagefolder, sounds (synthetic) or esc50 (data_path, fold)."""
    if cfg.data == "digits":
        return DigitsData(cfg, rank, world)
    if cfg.data == "sounds":
        from .sounds import SOUND_CLASSES, SYNTH_MEAN, SYNTH_STD
        x_train, y_train = sound_split("train", cfg.train_size, cfg.events)
        x_test, y_test = sound_split("test", cfg.test_size, cfg.events)
        t = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
        if cfg.label_noise:  # one noisy labelling of the one fixed set, for the teacher and every student alike
            t = {**t, "y_train": noisy_labels(t["y_train"], cfg.label_noise, SOUNDS_SEED, len(SOUND_CLASSES))}
        return TensorData(cfg, t, len(SOUND_CLASSES), rank, world, mask_value=-SYNTH_MEAN / (2 * SYNTH_STD))
    if cfg.data == "esc50":
        from .audio import ESC50_MEAN, ESC50_STD
        from .esc50 import load_esc50
        if not cfg.data_path:
            raise ValueError("data=esc50 needs data_path=/path/to/ESC-50 (with audio/ and meta/esc50.csv)")
        return TensorData(cfg, load_esc50(cfg.data_path, test_fold=cfg.fold), 50, rank, world,
                          mask_value=-ESC50_MEAN / (2 * ESC50_STD))
    if cfg.data == "imagefolder":
        if not cfg.data_path:
            raise ValueError("data=imagefolder needs data_path=/path/with/train/and/val")
        return FolderData(cfg, rank, world)
    raise ValueError(f"unknown data {cfg.data!r}; valid: digits, imagefolder, sounds, esc50")
