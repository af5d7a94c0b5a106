"""Sound for AST: the AST recipe's fbank, SpecAugment, WAV files, an embedded synthetic sound-event set, ESC-50.

Everything returns AST input, float32 (time, freq) per clip / (N, time, freq) per set, normalised as
`(fbank - mean) / (2 * std)` (AST dataloader.py and transformers' ASTFeatureExtractor).
"""
from __future__ import annotations

import csv
import math
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import torch
import torchaudio
from einops import rearrange

SAMPLE_RATE = 16_000  # AST recipe: every dataset resampled to 16 kHz
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974  # AST norm_stats; ASTFeatureExtractor defaults
ESC50_MEAN, ESC50_STD = -6.6268077, 5.358466  # AST norm_stats['esc50']
ESC50_MAX_LENGTH = 512  # AST target_length['esc50']: 5 s clips
ESC50_SPECAUG = dict(freq_mask=24, time_mask=96)  # AST egs/esc50 run script (AudioSet: 48, 192)
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")  # meta/esc50.csv


def _as_mono(waveform) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, torch.Tensor) else waveform)
    if w.ndim == 2 and w.shape[0] == 1:
        w = w[0]
    if w.ndim != 1:
        raise ValueError(f"waveform must be mono, (n,) or (1, n); got shape {tuple(w.shape)} (stereo? mix it down)")
    if w.numel() == 0:
        raise ValueError("waveform is empty (0 samples)")
    if not w.is_floating_point():  # int16 PCM as is would be 32768x too loud: +2.3 in AudioSet-normalised log-mel
        raise ValueError(f"waveform has dtype {w.dtype}: fbank takes float samples in [-1, 1] (scale integer PCM "
                         f"first, as read_wav does)")
    if not torch.isfinite(w).all():
        raise ValueError("waveform contains NaN or inf")
    return w.float()


def fbank(waveform, sample_rate: int, *, num_mel_bins: int = 128, max_length: int = 1024,
          mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD) -> torch.Tensor:
    """Mono waveform (n,) in [-1, 1] at 16 kHz -> normalised log-mel (max_length, num_mel_bins), the AST recipe:
    mean removed, Kaldi fbank (25 ms hanning window, 10 ms shift, htk_compat, no energy, dither 0), frames
    zero-padded or cut to max_length, then (x - mean) / (2 * std)."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate}: the AST recipe needs {SAMPLE_RATE} Hz (resample first)")
    if isinstance(num_mel_bins, bool) or not isinstance(num_mel_bins, int) or num_mel_bins < 3:
        raise ValueError(f"num_mel_bins={num_mel_bins!r} must be an int >= 3 (Kaldi's minimum)")
    if max_length < 1:
        raise ValueError(f"max_length={max_length} must be >= 1")
    w = _as_mono(waveform)
    if w.numel() < SAMPLE_RATE // 40:
        raise ValueError(f"waveform has {w.numel()} samples, fewer than one 25 ms window ({SAMPLE_RATE // 40})")
    w = w - w.mean()
    fb = torchaudio.compliance.kaldi.fbank(
        w[None], htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False, window_type="hanning",
        num_mel_bins=num_mel_bins, dither=0.0, frame_shift=10)
    fb = fb[:max_length]
    if not torch.isfinite(fb).all():  # finite samples far outside [-1, 1] overflow float32 (power spectrum, cast)
        raise ValueError(f"fbank overflowed float32 (largest |sample| {w.abs().max().item():.3g}): fbank takes "
                         f"samples in [-1, 1]")
    fb = torch.nn.functional.pad(fb, (0, 0, 0, max(0, max_length - fb.shape[0])))
    return (fb - mean) / (2 * std)


class SpecAugment:
    """SpecAugment as AST trains: one torchaudio FrequencyMasking(freq_mask) and TimeMasking(time_mask) band
    (width uniform in [0, mask)) per call on x (t f) or (b t f), iid per sample, from torch's global RNG. AST
    masks the fbank before normalising it (value 0), i.e. `mask_value = -mean / (2 * std)` on our normalised
    input; the defaults are the ESC-50 recipe's."""

    def __init__(self, *, freq_mask: int = ESC50_SPECAUG["freq_mask"], time_mask: int = ESC50_SPECAUG["time_mask"],
                 mask_value: float = -ESC50_MEAN / (2 * ESC50_STD)):
        self.freq = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True) if freq_mask else None
        self.time = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True) if time_mask else None
        self.mask_value = float(mask_value)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        single = x.ndim == 2
        s = rearrange(x[None] if single else x, "b t f -> b 1 f t")
        for m in (self.freq, self.time):
            if m is not None:
                s = m(s, self.mask_value)
        s = rearrange(s, "b 1 f t -> b t f")
        return s[0] if single else s


def read_wav(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """WAV file -> (mono float32 waveform (n,) in [-1, 1], sample rate); channels are averaged. 8-bit unsigned,
    16/24/32/64-bit integer and float PCM. A file scipy cannot parse, one cut short (fewer samples than its header
    announces: scipy would return the rest with a warning), one with sample rate 0, no samples, or NaN / inf samples
    raises ValueError naming the file."""
    from scipy.io import wavfile
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", wavfile.WavFileWarning)
            sr, a = wavfile.read(str(path))
    except OSError:
        raise  # missing, unreadable: the OS error names the file
    except (struct.error, EOFError) as e:  # scipy parsing a header that stops short
        raise ValueError(f"{path}: not a readable WAV file (header cut short or corrupt: {e})") from e
    except ValueError as e:  # scipy: not RIFF, unsupported encoding (A-law, ...), inconsistent header
        raise ValueError(f"{path}: not a readable WAV file ({e})") from e
    for note in caught:
        if "EOF" in str(note.message):
            raise ValueError(f"{path}: truncated WAV file ({note.message})")
        warnings.warn(note.message, stacklevel=2)  # other notes (a skipped chunk): scipy's own warning
    if sr <= 0:
        raise ValueError(f"{path}: WAV header gives sample rate {sr} Hz")
    if a.size == 0:
        raise ValueError(f"{path}: WAV file has no samples")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{path}: WAV file has NaN or inf samples")
    if a.dtype.kind == "i":
        a = a / float(2 ** (8 * a.dtype.itemsize - 1))
    elif a.dtype.kind == "u":
        a = (a.astype(np.float64) - 128.0) / 128.0
    w = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return (w.mean(dim=1) if w.ndim == 2 else w), int(sr)


def write_wav(path: str | os.PathLike, waveform, sample_rate: int) -> None:
    """Mono waveform in [-1, 1] -> 16-bit PCM WAV."""
    from scipy.io import wavfile
    a = np.clip(np.asarray(waveform, dtype=np.float64), -1.0, 1.0)
    wavfile.write(str(path), sample_rate, np.round(a * 32767).astype(np.int16))


# ---------------------------------------------------------------- the embedded synthetic sound-event set
SOUND_CLASSES = ("tone", "chirp_up", "chirp_down", "harmonic", "am_tone", "fm_tone", "click_train",
                 "noise_burst", "two_tone_beep", "tone_noise")
# Normalisation of the synthetic set: its own fbank mean / std, measured on 2000 seed-0 training clips.
SYNTH_MEAN, SYNTH_STD = -4.94, 3.64


def _band_noise(rng, n: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec[(f < lo) | (f > hi)] = 0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-12)


def _tone(f, t, phase=0.0):
    return np.sin(2 * np.pi * f * t + phase)


def _event(c: str, rng, n: int) -> np.ndarray:
    """One sound event of class c, n samples, unit-ish RMS before the envelope."""
    t = np.arange(n) / SAMPLE_RATE
    dur = n / SAMPLE_RATE
    f = np.exp(rng.uniform(np.log(250), np.log(4000)))
    ph = rng.uniform(0, 2 * np.pi)
    if c == "tone":
        return _tone(f, t, ph)
    if c in ("chirp_up", "chirp_down"):
        r = rng.uniform(2.0, 4.0)
        f0 = np.exp(rng.uniform(np.log(200), np.log(5000 / r)))
        k = np.log(r) / dur  # exponential sweep f0 -> f0 * r
        x = np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k + ph)
        return x if c == "chirp_up" else x[::-1].copy()
    if c == "harmonic":
        f0 = np.exp(rng.uniform(np.log(150), np.log(500)))
        ks = [k for k in range(1, rng.integers(4, 8) + 1) if k * f0 < 7000]
        return sum(_tone(k * f0, t, rng.uniform(0, 2 * np.pi)) / k for k in ks)
    if c == "am_tone":
        rate, depth = rng.uniform(6, 16), rng.uniform(0.8, 1.0)
        return (1 + depth * np.sin(2 * np.pi * rate * t)) / 2 * _tone(f, t, ph) * 1.6
    if c == "fm_tone":
        rate, dev = rng.uniform(4, 9), f * rng.uniform(0.06, 0.15)
        return np.sin(2 * np.pi * f * t + dev / rate * np.sin(2 * np.pi * rate * t) + ph)
    if c == "click_train":
        x = np.zeros(n)
        period = int(SAMPLE_RATE / rng.uniform(15, 60))
        click = rng.standard_normal(48) * np.exp(-np.arange(48) / 8)
        # the first click within the period, and within the event: a 0.1 s clip's event (480+ samples) can be
        # shorter than a period (up to 1066); the same draw as before whenever the period fits (clips >= 0.3 s)
        for s in range(int(rng.integers(0, min(period, n - 48))), n - 48, period):
            x[s:s + 48] += click
        return x / (x.std() + 1e-12)
    if c == "noise_burst":
        bw = 2 ** (rng.uniform(0.5, 1.5) / 2)
        return _band_noise(rng, n, f / bw, f * bw)
    if c == "two_tone_beep":
        x, b = np.zeros(n), int(n * rng.uniform(0.25, 0.4))
        f2 = f * np.exp(rng.choice([-1, 1]) * rng.uniform(np.log(1.25), np.log(2)))
        x[:b] = _tone(f, t[:b], ph) * np.hanning(b)
        x[n - b:] = _tone(f2, t[:b], ph) * np.hanning(b)
        return x * 1.6
    if c == "tone_noise":
        bw = 2 ** (rng.uniform(0.5, 1.5) / 2)
        g = np.exp(rng.uniform(np.log(300), np.log(4000)))
        return (_tone(f, t, ph) + rng.uniform(0.5, 1.0) * _band_noise(rng, n, g / bw, g * bw)) / 1.3
    raise ValueError(f"unknown sound class {c!r}; valid: {SOUND_CLASSES}")


def render_sound_event(label: int, rng: np.random.Generator, *, seconds: float = 1.0, events: int = 1) -> np.ndarray:
    """One clip (seconds * 16 kHz,) in [-1, 1]: `events` events of class `label`, each 0.3-0.7 of the clip long with
    its own random onset, frequency and shape, 10 ms ramps and unit RMS, summed (they may overlap in time), over
    coloured background noise (1/f^a, a in [0, 1.5], SNR about 0-30 dB against one event) at a random level. With
    several events the class evidence is repeated across the spectrogram (the sound analogue of the digit scene's
    copies). events=1 draws exactly what the single-event clip always drew."""
    if not seconds >= 0.1:
        raise ValueError(f"seconds={seconds!r}: clips must be at least 0.1 s long")
    if isinstance(events, bool) or not isinstance(events, int) or events < 1:
        raise ValueError(f"events={events!r} must be an int >= 1")
    n = int(round(seconds * SAMPLE_RATE))
    ev = np.zeros(n)
    ramp = SAMPLE_RATE // 100
    for _ in range(events):
        m = int(n * rng.uniform(0.3, 0.7))
        start = int(rng.integers(0, n - m + 1))
        env = np.ones(m)
        env[:ramp], env[-ramp:] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
        one = _event(SOUND_CLASSES[label], rng, m) * env
        ev[start:start + m] += one / (one.std() + 1e-12)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec /= np.maximum(f, 20.0) ** (rng.uniform(0, 1.5) / 2)
    bg = np.fft.irfft(spec, n)
    level = 10 ** rng.uniform(-1.6, -0.8)
    x = level * (ev + 10 ** (-rng.uniform(0, 30) / 20) * bg / bg.std())
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def synthetic_sound_events(*, n_train: int = 1000, n_test: int = 500, seed: int = 0, seconds: float = 1.0,
                           max_length: int = 100, num_mel_bins: int = 128, events: int = 1) -> dict[str, torch.Tensor]:
    """The embedded 10-class sound-event set: {x_train (N, max_length, bins), y_train (N,), x_test, y_test},
    balanced (label = index % 10), clip i of a split drawn from rng (seed, split, i) alone, through `fbank`.
    Nothing installed, nothing written to disk. 1.0 s clips give 98 frames (padded to 100): grid 12 x 9. `events`:
    events of the class per clip (render_sound_event).

    Measured (seed 0, 2000 train / 1000 test clips, ~4.5 ms a clip to make: 14 s): StandardScaler +
    LogisticRegression reach 33.6% test accuracy on the time-mean of the fbank, 48.4% on mean + std, 51.3%
    on mean + std + max, 36.0% on the whole flattened spectrogram (chance 10%); a small AST (64 wide, depth 4,
    AdamW 1e-3 one-cycle, 15 epochs) reaches 84.5%: how events change in time is what separates the classes."""
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        ys = [i % len(SOUND_CLASSES) for i in range(n)]
        waves = (render_sound_event(y, np.random.default_rng([seed, int(split == "test"), i]), seconds=seconds,
                                    events=events)
                 for i, y in enumerate(ys))
        out[f"x_{split}"] = _fbanks(waves, n, max_length=max_length, num_mel_bins=num_mel_bins,
                                    mean=SYNTH_MEAN, std=SYNTH_STD)
        out[f"y_{split}"] = torch.tensor(ys, dtype=torch.long)
    return out


def _fbanks(waves, n: int, *, max_length: int, num_mel_bins: int, mean: float, std: float,
            names=None) -> torch.Tensor:
    """16 kHz waveforms -> (n, max_length, bins); names[i] (a file) is named in the error wave i raises. Runs
    single-threaded: per-clip fbank ops are tiny, and on 2 cores 2 threads took 50x longer (2 ms -> 100 ms a
    clip, measured) whenever another process held a core."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xs = []
        for i, w in enumerate(waves):
            try:
                xs.append(fbank(w, SAMPLE_RATE, num_mel_bins=num_mel_bins, max_length=max_length, mean=mean, std=std))
            except ValueError as e:
                if names is None:
                    raise
                raise ValueError(f"{names[i]}: {e}") from e
    finally:
        torch.set_num_threads(old)
    return torch.stack(xs) if xs else torch.empty(0, max_length, num_mel_bins)


# ---------------------------------------------------------------- ESC-50 (Piczak 2015), the AST recipe's folds
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
        out[f"x_{split}"] = _fbanks((_resampled(p) for p in paths), len(paths), max_length=max_length,
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


def write_esc50_fixture(root: str | os.PathLike, *, classes: tuple[int, ...] = (0, 1, 2), clips_per_fold: int = 1,
                        seconds: float = 0.5, sample_rate: int = 44_100, seed: int = 0) -> Path:
    """Write a tiny ESC-50 look-alike under root (audio/{fold}-{src}-{take}-{target}.wav, meta/esc50.csv), one
    synthetic sound class per target (target % 10), so loaders can be tested offline. Returns root."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    rows = []
    for fold in range(1, 6):
        for target in classes:
            for k in range(clips_per_fold):
                src = 100000 + 1000 * fold + 10 * target + k
                name = f"{fold}-{src}-A-{target}.wav"
                rng = np.random.default_rng([seed, fold, target, k])
                w = render_sound_event(target % len(SOUND_CLASSES), rng, seconds=seconds)
                if sample_rate != SAMPLE_RATE:
                    w = torchaudio.functional.resample(torch.from_numpy(w), SAMPLE_RATE, sample_rate).numpy()
                write_wav(root / "audio" / name, w, sample_rate)
                rows.append([name, fold, target, f"class_{target}", str(target < 2), src, "A"])
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        csv.writer(f).writerows([list(ESC50_COLUMNS)] + rows)
    return root
