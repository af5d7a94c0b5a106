"""Stress tests of the data paths for rare draws, extreme but legal inputs and dependency behaviour: the DeiT eval and
train transforms on extreme sizes and every PIL mode ImageFolder's loader meets, thousands of MixUp/CutMix draws
checked against an independent computation, the AST fbank on silence / DC / clipping / one window / long clips and
bad dtypes, SpecAugment draws, the synthetic sound events at their shortest legal length, WAV encodings and broken
WAV files through the ESC-50 loader. Deterministic (fixed seeds), offline, a few seconds in all."""
import math
import shutil
import struct

import numpy as np
import pytest
import torch
import torchaudio
from PIL import Image
from scipy.io import wavfile

from maskedkd.data import audio as A, esc50 as E, sounds as S
import helpers as H
from maskedkd.data.images import (IMAGENET_MEAN, IMAGENET_STD, deit_eval_transform, deit_train_transform,
                                  image_folder, mixup_cutmix, seeded_rngs)

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: on 2 busy cores a second intra-op thread makes each fbank 100x slower (see audio.fbanks)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _normalised(rgb) -> torch.Tensor:
    """The eval transform's output for a constant image of colour rgb (0..255): ToTensor then Normalize."""
    v = torch.tensor(rgb, dtype=torch.float32) / 255
    return ((v - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))[:, None, None]


def _noise_image(h, w, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ---------------------------------------------------------------- images: extreme sizes, every mode the loader meets
EXTREME_HW = [(1, 1), (1, 500), (500, 1), (2, 3), (3, 2), (7, 5), (36, 37), (37, 36), (73, 74)]


@pytest.mark.parametrize("size", [32, 224])
def test_eval_transform_on_extreme_sizes_equals_deits_pipeline(size):
    """Resize(short side to int(size / 0.875), bicubic), CenterCrop, ToTensor, Normalize, written out as DeiT's
    datasets.py does, for 1x1, 1x500, 500x1 and odd sizes; a constant image stays exactly its colour."""
    from torchvision import transforms as T
    deit = T.Compose([T.Resize(int(size / 0.875), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ours = deit_eval_transform(size)
    for k, (h, w) in enumerate(EXTREME_HW if size == 32 else [(1, 1), (1, 40), (40, 1)]):  # 1x500 -> 256x128000
        img = _noise_image(h, w, seed=k)
        a = ours(img)
        assert a.shape == (3, size, size) and torch.isfinite(a).all()
        assert torch.equal(a, deit(img)), (h, w)
        flat = ours(Image.new("RGB", (w, h), (200, 30, 90)))
        torch.testing.assert_close(flat, _normalised((200, 30, 90)).expand(3, size, size), atol=1e-6, rtol=0)


def test_train_transform_on_extreme_sizes():
    """A few seeded draws per extreme or flat image (the 20,000-draw stress is in test_images.py): the random
    resized crop of a 1 x 500 strip or a single pixel, then RandAugment on flat images, give finite img_size
    tensors."""
    t = deit_train_transform(32)
    imgs = [_noise_image(h, w, seed=k) for k, (h, w) in enumerate(EXTREME_HW)]
    imgs += [Image.new("RGB", (5, 5), (7, 200, 13)), Image.new("RGB", (40, 30)), Image.new("RGB", (1, 1), "white")]
    for k, img in enumerate(imgs):
        for s in range(4):
            with seeded_rngs((k, s)):
                x = t(img)
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all(), (img.size, s)


# (file name, image, the RGB the loader must give). ImageFolder's default loader opens with PIL and converts to
# RGB: alpha is dropped (not composited), a palette index gives its colour, CMYK is converted channel-wise.
def _mode_cases():
    pal = Image.new("P", (6, 4), 1)
    pal.putpalette([0, 0, 0, 40, 160, 220] + [0] * 762)
    return [
        ("rgb.png", Image.new("RGB", (1, 1), (200, 30, 90)), (200, 30, 90), 0),
        ("rgb.jpg", Image.new("RGB", (37, 1), (200, 30, 90)), (200, 30, 90), 3),
        ("l.png", Image.new("L", (1, 37), 77), (77, 77, 77), 0),
        ("l.jpg", Image.new("L", (9, 5), 128), (128, 128, 128), 3),
        ("la.png", Image.new("LA", (5, 9), (77, 10)), (77, 77, 77), 0),
        ("rgba.png", Image.new("RGBA", (3, 2), (10, 200, 30, 0)), (10, 200, 30), 0),
        ("p.png", pal, (40, 160, 220), 0),
        ("p_transparent.png", pal.copy(), (40, 160, 220), 0),
        ("bilevel.png", Image.new("1", (7, 3), 1), (255, 255, 255), 0),
        ("cmyk.jpg", Image.new("CMYK", (8, 8), (200, 0, 55, 0)), (55, 255, 200), 3),
        ("rgb.bmp", Image.new("RGB", (2, 5), (1, 2, 3)), (1, 2, 3), 0),
        ("rgb.tif", Image.new("RGB", (5, 2), (250, 251, 252)), (250, 251, 252), 0),
        ("gray.pgm", Image.new("L", (4, 4), 200), (200, 200, 200), 0),
        ("rgb.webp", Image.new("RGB", (16, 16), (0, 128, 255)), (0, 128, 255), 3),
    ]


@pytest.fixture(scope="module")
def mode_folder(tmp_path_factory):
    """root/{train,val}/c{k}/<file>: one class per PIL mode / format, one constant-colour image each."""
    root = tmp_path_factory.mktemp("modes")
    for k, (name, img, _, _) in enumerate(_mode_cases()):
        for split in ("train", "val"):
            d = root / split / f"c{k:02d}"
            d.mkdir(parents=True)
            kw = {"transparency": 1} if name == "p_transparent.png" else {}
            img.save(d / name, **kw)
    return root


def test_image_folder_gives_the_true_colour_for_every_mode(mode_folder):
    cases = _mode_cases()
    ds = image_folder(mode_folder, "val", 32)
    assert len(ds) == len(cases)
    for (x, y), (name, _, rgb, tol) in zip(ds, cases):
        assert x.shape == (3, 32, 32) and torch.isfinite(x).all(), name
        want = _normalised(rgb).expand(3, 32, 32)
        torch.testing.assert_close(x, want, atol=tol / 255 / min(IMAGENET_STD) + 1e-6, rtol=0, msg=name)


def test_image_folder_train_transform_on_every_mode(mode_folder):
    ds = image_folder(mode_folder, "train", 32)
    for i in range(len(ds)):
        for s in range(3):
            with seeded_rngs((i, s)):
                x, y = ds[i]
            assert y == i and x.shape == (3, 32, 32) and torch.isfinite(x).all()


def test_16bit_png_keeps_its_brightness(tmp_path):
    """torchvision's default loader clips a 16-bit PNG (Pillow mode I;16) at 255 when it converts to RGB: a 50% grey
    (0x8080) turned white. images.load_rgb keeps the top 8 bits."""
    for split in ("train", "val"):
        (tmp_path / split / "c").mkdir(parents=True)
        Image.fromarray(np.full((6, 7), 0x8080, np.uint16)).save(tmp_path / split / "c" / "a.png")  # 50% grey
    x, _ = image_folder(tmp_path, "val", 32)[0]
    torch.testing.assert_close(x, _normalised((128, 128, 128)).expand(3, 32, 32), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- MixUp / CutMix: thousands of draws
def test_mixup_cutmix_many_draws_match_an_independent_computation():
    """3000 seeded batches of tiny images (H, W down to 1): shapes kept, finite, soft targets non-negative, summing
    to 1 and equal to lam * smooth(y) + (1 - lam) * smooth(y flipped) with one lam per batch; the images are either
    lam * x + (1 - lam) * x flipped (MixUp) or x with one rectangle taken from x flipped, of area exactly
    (1 - lam) * H * W (CutMix, timm's correct_lam). The draws reach MixUp lam near 0 and 1 and
    zero-area CutMix boxes."""
    C, s = 8, 0.1
    m = mixup_cutmix(C)
    seen = {"identity": 0, "mixup": 0, "cutmix": 0}
    lams = []
    state = np.random.get_state()  # timm's Mixup draws from numpy's global RNG: one seeded stream, put back after
    np.random.seed(7)
    try:
        _mix_draws(m, C, s, seen, lams)
    finally:
        np.random.set_state(state)
    assert min(seen.values()) > 0, seen
    assert min(lams) < 0.01 and max(lams) > 0.99


def _mix_draws(m, C, s, seen, lams):
    off, on = s / C, 1 - s + s / C
    shapes = [(2, 1, 1), (4, 1, 7), (6, 5, 1), (2, 3, 3), (4, 2, 5), (6, 7, 4)]
    for k in range(3000):
        b, h, w = shapes[k % len(shapes)]
        g = torch.Generator().manual_seed(k)
        x0 = torch.randn(b, 3, h, w, generator=g)
        y = torch.randperm(C, generator=g)[:b]  # distinct labels: every row's pair has another class
        xm, ym = m(x0.clone(), y)
        assert xm.shape == (b, 3, h, w) and ym.shape == (b, C) and ym.dtype == torch.float32
        assert torch.isfinite(xm).all() and torch.isfinite(ym).all()
        assert ym.min() >= off - 1e-7 and torch.allclose(ym.sum(1), torch.ones(b), atol=1e-6)
        lam = ((ym[0, y[0]] - off) / (1 - s)).item()
        assert -1e-6 <= lam <= 1 + 1e-6
        smooth = torch.full((b, C), off).scatter_(1, y[:, None], on)
        assert torch.allclose(ym, lam * smooth + (1 - lam) * smooth.flip(0), atol=1e-6, rtol=0)
        flip = x0.flip(0)
        changed = (xm != x0).any(0).any(0)  # (h, w)
        if not changed.any():
            seen["identity"] += 1  # lam 1 to float32: a CutMix box of zero area, or MixUp at lam ~ 1
            assert lam == pytest.approx(1, abs=1e-6)
        elif torch.allclose(xm, lam * x0 + (1 - lam) * flip, atol=1e-5):
            seen["mixup"] += 1
            lams.append(lam)
        else:
            rows, cols = changed.any(1), changed.any(0)
            assert torch.equal(changed, rows[:, None] & cols[None, :])  # one rectangle
            for band in (rows, cols):
                i = band.nonzero()[:, 0]
                assert torch.equal(i, torch.arange(i[0], i[-1] + 1))  # contiguous
            assert torch.equal(xm[:, :, changed], flip[:, :, changed]) and torch.equal(xm[:, :, ~changed],
                                                                                        x0[:, :, ~changed])
            assert 1 - lam == pytest.approx(changed.sum().item() / (h * w), abs=1e-6)
            seen["cutmix"] += 1


def test_mixup_refuses_an_odd_batch():
    """timm's Mixup pairs sample i with sample b-1-i; an odd batch would mix the middle one with itself. timm
    refuses with an assert (FolderData refuses an odd batch per process before, with a ValueError)."""
    with pytest.raises(AssertionError, match="even"):
        mixup_cutmix(3)(torch.randn(3, 3, 4, 4), torch.tensor([0, 1, 2]))


# ---------------------------------------------------------------- audio features
KALDI = dict(htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning", num_mel_bins=128,
             dither=0.0, frame_shift=10)
LOG_EPS = math.log(torch.finfo(torch.float32).eps)  # Kaldi's floor on mel energies


def _kaldi(w, n=None):
    """Kaldi fbank of the first n samples of w, w's whole-clip mean removed (the AST recipe, written out)."""
    from torchaudio.compliance import kaldi
    w = torch.as_tensor(w, dtype=torch.float32)
    return kaldi.fbank((w - w.mean())[:n][None], **KALDI)


@pytest.fixture(scope="module")
def tone():
    return S.render_sound_event(0, np.random.default_rng(5), seconds=1.0)


def test_fbank_of_extreme_but_legal_waveforms(tone):
    pad = (0 - A.AUDIOSET_MEAN) / (2 * A.AUDIOSET_STD)
    floor = (LOG_EPS - A.AUDIOSET_MEAN) / (2 * A.AUDIOSET_STD)
    fb = lambda w, L=100: A.fbank(w, 16000, max_length=L)  # noqa: E731
    silence = fb(np.zeros(16000, np.float32))  # every mel energy at Kaldi's floor, then the zero padding
    assert torch.equal(silence[:98], torch.full((98, 128), floor))
    assert torch.equal(silence[98:], torch.full((2, 128), pad))
    assert torch.equal(fb(np.full(16000, 0.7, np.float32)), silence)  # a DC offset alone is silence
    torch.testing.assert_close(fb(tone + np.float32(0.25)), fb(tone), atol=1e-4, rtol=0)  # the offset is removed
    square = np.where(np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) >= 0, 1.0, -1.0).astype(np.float32)
    for w in (square, -np.ones(16000, np.float32), np.clip(tone * 50, -1, 1)):  # full scale, clipped
        x = fb(w)
        assert x.shape == (100, 128) and torch.isfinite(x).all() and x.max() < 3
    one = np.random.default_rng(0).uniform(-1, 1, 400).astype(np.float32)  # exactly one 25 ms window
    x = A.fbank(one, 16000, max_length=5, mean=0.0, std=0.5)
    torch.testing.assert_close(x[:1], _kaldi(one), atol=0, rtol=0)
    assert torch.equal(x[1:], torch.zeros(4, 128))
    long = np.random.default_rng(1).uniform(-0.5, 0.5, 16000 * 15).astype(np.float32)  # 1498 frames
    x = A.fbank(long, 16000, max_length=1024, mean=0.0, std=0.5)
    n = 400 + 160 * 1023
    torch.testing.assert_close(x, _kaldi(long, n), atol=1e-5, rtol=0)
    for other in (tone.astype(np.float64), torch.from_numpy(tone), tone.tolist(), tone[None]):  # float types, (1, n)
        assert torch.equal(fb(other), fb(tone))
    half = tone.astype(np.float16)
    assert torch.equal(fb(half), fb(half.astype(np.float32)))


@pytest.mark.parametrize("bad", ["int16", "int32", "uint8", "bool", "complex64", "int_list"])
def test_fbank_refuses_non_float_samples(bad, tone):
    """int16 PCM passed as is would be read as samples 32768 x too loud: the log-mel shifts by log(2^30), +2.3 in
    AudioSet-normalised units, silently. fbank takes float samples in [-1, 1] and says so."""
    w = {"int16": np.round(tone * 32767).astype(np.int16), "int32": np.round(tone * (2 ** 31 - 1)).astype(np.int32),
         "uint8": np.round(tone * 127 + 128).astype(np.uint8), "bool": tone > 0, "complex64": tone.astype(np.complex64),
         "int_list": [0, 1, -1] * 200}[bad]
    with pytest.raises(ValueError, match="float"):
        A.fbank(w, 16000)


@pytest.mark.parametrize("dtype,value", [(np.float32, 1e30), (np.float32, 1e19), (np.float64, 1e39)])
def test_fbank_overflow_raises_instead_of_nan(dtype, value):
    """A finite sample far outside [-1, 1] overflows float32 in the power spectrum (or in the cast from float64):
    NaN / inf features would reach the model. fbank raises."""
    w = np.zeros(16000, dtype)
    w[8000] = value
    with pytest.raises(ValueError, match="overflow"):
        A.fbank(w, 16000)


def test_spec_augment_many_draws():
    """2000 batches: one contiguous band of frames and one of mel bins per sample, narrower than the mask
    parameters, the rest untouched, finite, shape kept; 2-d input too."""
    aug = A.SpecAugment(freq_mask=6, time_mask=9, mask_value=-7.5)
    torch.manual_seed(0)
    widths_t, widths_f = set(), set()
    for k in range(2000):
        x = torch.randn(3, 20, 16) if k % 2 else torch.randn(20, 16)
        y = aug(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        xs, ys = (x, y) if x.ndim == 3 else (x[None], y[None])
        for xi, yi in zip(xs, ys):
            m = yi == -7.5
            rows, cols = m.all(1), m.all(0)
            assert torch.equal(m, rows[:, None] | cols[None, :]) and torch.equal(yi[~m], xi[~m])
            for band, limit, seen in ((rows, 9, widths_t), (cols, 6, widths_f)):
                i = band.nonzero()[:, 0]
                assert len(i) < limit and (len(i) == 0 or i[-1] - i[0] + 1 == len(i))
                seen.add(len(i))
    assert widths_t == set(range(9)) and widths_f == set(range(6))


def test_every_sound_event_is_audible_at_the_shortest_clip():
    """render_sound_event accepts clips down to 0.1 s (events of 480..1120 samples). A click train's first click
    was drawn anywhere in its period (up to 1066 samples) and fell past the event's end in ~3.5% of 0.1 s draws:
    a silent event labelled click_train. Every class, every legal event length: the event is not silent."""
    for c in S.SOUND_CLASSES:
        for k, m in enumerate(range(480, 1121, 8)):
            e = S._event(c, np.random.default_rng([k, 11]), m)
            assert e.shape == (m,) and np.isfinite(e).all() and e.std() > 0.1, (c, m)


def test_rendered_clips_many_draws():
    for seconds in (0.1, 0.37, 1.0):
        n = int(round(seconds * 16000))
        for k in range(60):
            w = S.render_sound_event(k % 10, np.random.default_rng([k, 3]), seconds=seconds)
            assert w.shape == (n,) and w.dtype == np.float32 and np.isfinite(w).all() and np.abs(w).max() <= 1
            assert w.std() > 0


# ---------------------------------------------------------------- WAV files and the ESC-50 loader
def _write_pcm(path, frames: np.ndarray, sr: int, bits: int, fmt: int = 1):
    """A plain RIFF/WAVE PCM file written by hand (scipy cannot write 24-bit): frames int (n, ch) of `bits`."""
    frames = np.asarray(frames).reshape(len(frames), -1)
    ch, nbytes = frames.shape[1], bits // 8
    u = frames.astype(np.int64) & ((1 << bits) - 1)
    data = np.stack([(u >> (8 * i)) & 255 for i in range(nbytes)], -1).astype(np.uint8).tobytes()
    fmt_chunk = struct.pack("<HHIIHH", fmt, ch, sr, sr * ch * nbytes, ch * nbytes, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


@pytest.fixture(scope="module")
def pcm():
    """int16 samples covering full scale (both extremes) and the float32 waveform they stand for."""
    v = np.random.default_rng(2).integers(-32768, 32768, 2000).astype(np.int16)
    v[:2] = (-32768, 32767)
    return v, torch.from_numpy(v.astype(np.float32) / 32768)


def test_wav_encodings_read_the_same_samples(tmp_path, pcm):
    v, want = pcm
    v32 = v.astype(np.int32)
    files = {
        "i16.wav": lambda p: wavfile.write(p, 8000, v),
        "i16_stereo.wav": lambda p: wavfile.write(p, 8000, np.stack([v, v], 1)),
        "i16_5ch.wav": lambda p: wavfile.write(p, 8000, np.stack([v] * 5, 1)),
        "i24.wav": lambda p: _write_pcm(p, v32 << 8, 8000, 24),
        "i24_stereo.wav": lambda p: _write_pcm(p, np.stack([v32 << 8] * 2, 1), 8000, 24),
        "i32.wav": lambda p: wavfile.write(p, 8000, v32 << 16),
        "f32.wav": lambda p: wavfile.write(p, 8000, want.numpy()),
        "f64.wav": lambda p: wavfile.write(p, 8000, want.numpy().astype(np.float64)),
    }
    for name, write in files.items():
        write(tmp_path / name)
        w, sr = A.read_wav(tmp_path / name)
        assert sr == 8000 and w.dtype == torch.float32 and torch.equal(w, want), name
    wavfile.write(tmp_path / "half.wav", 8000, np.stack([v, np.zeros_like(v)], 1))
    assert torch.equal(A.read_wav(tmp_path / "half.wav")[0], want / 2)  # channels averaged
    u8 = (v.astype(np.int32) >> 8) + 128
    wavfile.write(tmp_path / "u8.wav", 8000, u8.astype(np.uint8))
    assert torch.equal(A.read_wav(tmp_path / "u8.wav")[0], torch.from_numpy((u8 - 128) / 128).float())


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    """A 10-clip ESC-50 look-alike (44.1 kHz int16, 0.5 s) and its fold-2 load."""
    root = H.write_esc50_fixture(tmp_path_factory.mktemp("esc") / "ESC-50", classes=(0, 1), seconds=0.5)
    return root, E.load_esc50(root, test_fold=2, max_length=32)


VICTIM = "2-102010-A-1.wav"  # the second test clip of fold 2


def test_esc50_loader_reads_every_encoding_alike(esc50, tmp_path):
    """The same samples stored as 24-bit, 32-bit, float32 or stereo give the same features, bit for bit; a clip
    stored at 16 kHz skips the resampler; other rates are resampled."""
    src, want = esc50
    root = shutil.copytree(src, tmp_path / "ESC-50")
    clip = root / "audio" / VICTIM
    sr, v = wavfile.read(clip)
    assert sr == 44100 and v.dtype == np.int16
    for write in (lambda p: _write_pcm(p, v.astype(np.int32) << 8, sr, 24),
                  lambda p: wavfile.write(p, sr, v.astype(np.int32) << 16),
                  lambda p: wavfile.write(p, sr, v.astype(np.float32) / 32768),
                  lambda p: wavfile.write(p, sr, np.stack([v, v], 1))):
        write(clip)
        got = E.load_esc50(root, test_fold=2, max_length=32)
        assert torch.equal(got["x_test"], want["x_test"]) and torch.equal(got["x_train"], want["x_train"])
    w16 = torch.from_numpy(S.render_sound_event(1, np.random.default_rng(0), seconds=0.5))
    resample = torchaudio.functional.resample
    for rate in (16000, 8000, 22050, 48000):
        w = w16 if rate == 16000 else resample(w16, 16000, rate)
        wavfile.write(clip, rate, w.numpy())
        x = E.load_esc50(root, test_fold=2, max_length=32)["x_test"][1]
        back = w if rate == 16000 else resample(w, rate, 16000)
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, A.fbank(back, 16000, max_length=32, mean=A.ESC50_MEAN, std=A.ESC50_STD))


def _broken(kind: str, path):
    wavfile.write(path, 16000, np.zeros(800, np.int16))
    raw = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "riff_only":
        path.write_bytes(b"RIFF")
    elif kind == "header_cut_20":
        path.write_bytes(raw[:20])
    elif kind == "header_cut_40":
        path.write_bytes(raw[:40])
    elif kind == "data_cut":
        path.write_bytes(raw[:44 + 301])  # 150.5 of the 800 samples its header announces
    elif kind == "no_samples":
        wavfile.write(path, 16000, np.zeros(0, np.int16))
    elif kind == "not_a_wav":
        path.write_bytes(b"ID3\x04 this is an mp3 renamed to .wav" * 20)
    elif kind == "alaw":
        _write_pcm(path, np.zeros(800, np.uint8), 8000, 8, fmt=6)
    elif kind == "nan":
        wavfile.write(path, 16000, np.r_[np.zeros(799, np.float32), np.nan])
    elif kind == "inf":
        wavfile.write(path, 16000, np.r_[np.zeros(799, np.float32), -np.inf])
    elif kind == "zero_rate":
        _write_pcm(path, np.zeros(800, np.int16), 0, 16)  # a consistent header scipy accepts
    elif kind == "too_short":
        wavfile.write(path, 16000, np.zeros(100, np.int16))  # under one 25 ms window
    else:
        raise AssertionError(kind)


BROKEN = ["empty", "riff_only", "header_cut_20", "header_cut_40", "data_cut", "no_samples", "not_a_wav", "alaw",
          "nan", "inf", "zero_rate", "too_short"]


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_wav_raises_naming_the_file(kind, esc50, tmp_path):
    root = shutil.copytree(esc50[0], tmp_path / "ESC-50")
    _broken(kind, root / "audio" / VICTIM)
    with pytest.raises(ValueError, match=VICTIM):
        E.load_esc50(root, test_fold=2, max_length=32)
    if kind != "too_short":  # a short clip is a valid WAV: only fbank refuses it
        with pytest.raises(ValueError, match=VICTIM):
            A.read_wav(root / "audio" / VICTIM)


def test_odd_sample_rate_is_refused_before_the_resampler_runs(esc50, tmp_path, monkeypatch):
    """torchaudio's sinc resampler builds a (new / g) x (orig / g) kernel, g = gcd of the rates: 32001 Hz -> 16 kHz
    took 33 s and 8.8 GB for one 0.5 s clip (measured). Such a file is refused by name instead; 44.1 kHz passes."""
    real = torchaudio.functional.resample

    def guarded(w, orig, new, *a, **kw):
        assert math.gcd(orig, new) >= 100, f"resampler called for {orig} Hz: would take GBs"
        return real(w, orig, new, *a, **kw)
    monkeypatch.setattr(torchaudio.functional, "resample", guarded)
    root = shutil.copytree(esc50[0], tmp_path / "ESC-50")
    wavfile.write(root / "audio" / VICTIM, 32001, np.zeros(16000, np.int16))
    with pytest.raises(ValueError, match=f"{VICTIM}.*32001"):
        E.load_esc50(root, test_fold=2, max_length=32)


def test_a_truncated_jpeg_raises_naming_the_file(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "c").mkdir(parents=True)
        Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(tmp_path / split / "c" / "a.jpg", quality=90)
    bad = tmp_path / "val" / "c" / "a.jpg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with pytest.raises(OSError, match=f"cannot read image {bad}"):
        image_folder(tmp_path, "val", 32)[0]
