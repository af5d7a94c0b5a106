"""Sound features for AST: the AST recipe's fbank, SpecAugment, WAV files. The sets built on them: the embedded
synthetic sound events (data/sounds.py) and ESC-50 (data/esc50.py).

Everything returns AST input, float32 (time, freq) per clip / (N, time, freq) per set, normalised as
`(fbank - mean) / (2 * std)` (AST dataloader.py and transformers' ASTFeatureExtractor).
"""
from __future__ import annotations

import os
import struct
import warnings

import numpy as np
import torch
import torchaudio
from einops import rearrange

SAMPLE_RATE = 16_000  # AST recipe: every dataset resampled to 16 kHz
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974  # AST norm_stats; ASTFeatureExtractor defaults
ESC50_MEAN, ESC50_STD = -6.6268077, 5.358466  # AST norm_stats['esc50']
ESC50_SPECAUG = dict(freq_mask=24, time_mask=96)  # AST egs/esc50 run script (AudioSet: 48, 192)


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


def fbanks(waves, n: int, *, max_length: int, num_mel_bins: int, mean: float, std: float,
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
