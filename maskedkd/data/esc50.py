"""ESC-50 (Piczak 2015) as the AST recipe reads it: fold-wise splits, clips resampled to 16 kHz, fbank features
(data/audio.py)."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import torch
import torchaudio

from .audio import ESC50_MEAN, ESC50_SPECAUG, ESC50_STD, SAMPLE_RATE, fbanks, read_wav  # noqa: F401 (ESC-50's recipe)

ESC50_MAX_LENGTH = 512  # AST target_length['esc50']: 5 s clips
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")  # meta/esc50.csv


def read_esc50_meta(root: str | os.PathLike) -> list[dict]:
    """root/meta/esc50.csv -> rows {filename, fold (1-5), target (0-49), category, esc10 (bool), src_file, take}."""
    path = Path(root) / "meta" / "esc50.csv"
    if not path.is_file():
        raise FileNotFoundError(f"ESC-50 metadata not found: {path} (expected root/meta/esc50.csv)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or tuple(rows[0]) != ESC50_COLUMNS:
        raise ValueError(f"{path}: columns {tuple(rows[0]) if rows else ()} != {ESC50_COLUMNS}")
    for r in rows:
        r["fold"], r["target"] = int(r["fold"]), int(r["target"])
        r["esc10"] = r["esc10"].strip().lower() == "true"
    return rows


def load_esc50(root: str | os.PathLike, *, test_fold: int, max_length: int = ESC50_MAX_LENGTH,
               num_mel_bins: int = 128, mean: float = ESC50_MEAN, std: float = ESC50_STD,
               esc10: bool = False) -> dict[str, torch.Tensor]:
    """ESC-50 folder -> {x_train, y_train, x_test, y_test}: the AST recipe's fold-wise split (train on the
    four other folds, test on `test_fold`), clips resampled to 16 kHz, fbank (max_length, bins), labels =
    `target` (0-49). esc10=True keeps the ESC-10 subset (labels stay ESC-50 targets). Average the 5 folds."""
    if test_fold not in (1, 2, 3, 4, 5):
        raise ValueError(f"test_fold={test_fold!r} must be one of 1..5")
    rows = [r for r in read_esc50_meta(root) if r["esc10"] or not esc10]
    out = {}
    for split, keep in (("train", lambda r: r["fold"] != test_fold), ("test", lambda r: r["fold"] == test_fold)):
        paths = [Path(root) / "audio" / r["filename"] for r in rows if keep(r)]
        out[f"x_{split}"] = fbanks((_resampled(p) for p in paths), len(paths), max_length=max_length,
                                    num_mel_bins=num_mel_bins, mean=mean, std=std, names=paths)
        out[f"y_{split}"] = torch.tensor([r["target"] for r in rows if keep(r)], dtype=torch.long)
    return out


MAX_RESAMPLE_KERNEL = 1 << 24  # torchaudio's sinc kernel size (new / g) * (orig / g) that we let it build


def _resampled(path: Path) -> torch.Tensor:
    """WAV -> mono 16 kHz (torchaudio's sinc resampler; AST converted ESC-50's 44.1 kHz files with sox). The
    resampler builds a (16000 / g) x (rate / g) kernel, g = gcd(rate, 16000): 160 x 441 for 44.1 kHz, but
    16000 x 32001 (33 s, 8.8 GB for one clip, measured) for 32001 Hz; such rates are refused by file name."""
    w, sr = read_wav(path)
    if sr == SAMPLE_RATE:
        return w
    g = math.gcd(sr, SAMPLE_RATE)
    if (sr // g) * (SAMPLE_RATE // g) > MAX_RESAMPLE_KERNEL:
        raise ValueError(f"{path}: sample rate {sr} Hz: resampling to {SAMPLE_RATE} Hz needs a {SAMPLE_RATE // g} x "
                         f"{sr // g} sinc kernel (GBs); convert the file to a common rate (e.g. 44100 Hz) first")
    return torchaudio.functional.resample(w, sr, SAMPLE_RATE)
