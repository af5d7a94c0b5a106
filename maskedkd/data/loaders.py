"""Batches for the training program: deterministic per (seed, epoch), sharded over ranks, resumable mid-epoch.

Each source gives `num_classes`, `steps_per_epoch`, `train_batches(epoch, start)` (this rank's share of every
global batch from batch `start` on) and `eval_batches()`.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .images import RepeatAugSampler, clean_digits, cluttered_digits, image_folder, mixup_cutmix

DIGITS_TEST_SEED = 12345  # one fixed test set for every run, seeds and configs alike


def sharded_batches(x, y, cfg, rank: int, world: int, epoch: int, start: int, steps: int):
    """This rank's share of each global batch of a (seed, epoch) permutation of in-memory (x, y), from `start`."""
    b = cfg.batch_size
    per = b // world
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
    for s in range(start, steps):
        idx = perm[s * b: (s + 1) * b][rank * per: (rank + 1) * per]
        yield x[idx], y[idx]


class DigitsData:
    """The embedded cluttered-digits set: a fresh clutter draw of train_size images every epoch (the first
    clean_epochs are clean centred digits), fixed test images from disjoint source digits."""

    num_classes = 10

    def __init__(self, cfg, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.steps_per_epoch = cfg.train_size // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"train_size={cfg.train_size} is smaller than batch_size={cfg.batch_size}")
        self._epoch_cache: tuple[int, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._test = None

    def epoch_data(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean = epoch < self.cfg.clean_epochs
        draw = epoch if self.cfg.fresh_clutter or clean else self.cfg.clean_epochs  # fixed set: one draw
        if self._epoch_cache is None or self._epoch_cache[0] != draw:
            make = clean_digits if clean else cluttered_digits
            self._epoch_cache = (draw, make("train", self.cfg.train_size, self.cfg.seed * 100_003 + draw))
        return self._epoch_cache[1]

    def train_batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.epoch_data(epoch)
        return sharded_batches(x, y, self.cfg, self.rank, self.world, epoch, start, self.steps_per_epoch)

    def eval_batches(self, batch: int = 500):
        if self._test is None:
            self._test = cluttered_digits("test", self.cfg.test_size, DIGITS_TEST_SEED)
        x, y = self._test
        return [(x[i: i + batch], y[i: i + batch]) for i in range(0, len(x), batch)]


class FolderData:
    """ImageFolder (data_path/train, data_path/val) with the DeiT recipe: repeated augmentation over ranks,
    MixUp/CutMix + label smoothing on each batch, resize-256 / centre-crop-224 evaluation."""

    def __init__(self, cfg, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world = cfg, rank, world
        size = cfg.img_size or 224
        self.train_set = image_folder(cfg.data_path, "train", size)
        self.val_set = image_folder(cfg.data_path, "val", size)
        if self.val_set.classes != self.train_set.classes:
            raise ValueError(f"val classes differ from train classes under {cfg.data_path}")
        self.num_classes = len(self.train_set.classes)
        self.per_rank = cfg.batch_size // world
        self.sampler = RepeatAugSampler(len(self.train_set), num_replicas=world, rank=rank,
                                        repeats=max(1, cfg.repeated_aug), seed=cfg.seed)
        self.steps_per_epoch = len(self.sampler) // self.per_rank
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.train_set)} training images give no full batch of {self.per_rank}")
        self.mix = mixup_cutmix(self.num_classes) if cfg.mixup else None

    def train_batches(self, epoch: int, start: int = 0):
        self.sampler.set_epoch(epoch, start * self.per_rank)
        g = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch * 31 + start)
        loader = torch.utils.data.DataLoader(self.train_set, batch_size=self.per_rank, sampler=self.sampler,
                                             num_workers=self.cfg.num_workers, drop_last=True, generator=g,
                                             pin_memory=torch.cuda.is_available())
        for i, (x, y) in enumerate(loader):
            if start + i >= self.steps_per_epoch:
                break
            yield self.mix(x, y) if self.mix is not None else (x, y)

    def eval_batches(self):
        return torch.utils.data.DataLoader(self.val_set, batch_size=int(1.5 * self.per_rank),
                                           num_workers=self.cfg.num_workers)


class TensorData:
    """A fixed in-memory set (the synthetic sound events, or one ESC-50 fold split): batches drawn by a
    (seed, epoch) permutation, sharded over ranks like DigitsData."""

    def __init__(self, cfg, tensors: dict[str, torch.Tensor], num_classes: int, rank: int = 0, world: int = 1):
        self.cfg, self.rank, self.world, self.t = cfg, rank, world, tensors
        self.num_classes = num_classes
        self.steps_per_epoch = len(tensors["y_train"]) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(tensors['y_train'])} training examples give no full batch of {cfg.batch_size}")

    def train_batches(self, epoch: int, start: int = 0):
        return sharded_batches(self.t["x_train"], self.t["y_train"], self.cfg, self.rank, self.world, epoch, start,
                               self.steps_per_epoch)

    def eval_batches(self, batch: int = 250):
        x, y = self.t["x_test"], self.t["y_test"]
        return [(x[i: i + batch], y[i: i + batch]) for i in range(0, len(x), batch)]


SOUNDS_SEED = 0  # one fixed synthetic sound set for every run


def build_data(cfg, rank: int = 0, world: int = 1):
    """The data source a TrainConfig names: digits, imagefolder, sounds (synthetic) or esc50 (data_path, fold)."""
    if cfg.data == "digits":
        return DigitsData(cfg, rank, world)
    if cfg.data == "sounds":
        from .audio import SOUND_CLASSES, synthetic_sound_events
        t = synthetic_sound_events(n_train=cfg.train_size, n_test=cfg.test_size, seed=SOUNDS_SEED)
        return TensorData(cfg, t, len(SOUND_CLASSES), rank, world)
    if cfg.data == "esc50":
        from .audio import load_esc50
        if not cfg.data_path:
            raise ValueError("data=esc50 needs data_path=/path/to/ESC-50 (with audio/ and meta/esc50.csv)")
        return TensorData(cfg, load_esc50(cfg.data_path, test_fold=cfg.fold), 50, rank, world)
    if cfg.data == "imagefolder":
        if not cfg.data_path:
            raise ValueError("data=imagefolder needs data_path=/path/with/train/and/val")
        return FolderData(cfg, rank, world)
    raise ValueError(f"unknown data {cfg.data!r}; valid: digits, imagefolder, sounds, esc50")
