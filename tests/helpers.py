"""Shared test helpers: timm reference models with perturbed weights (so every parameter matters); a tiny ESC-50
look-alike written to disk."""
import csv
from pathlib import Path

import numpy as np
import torch
import torchaudio

import maskedkd as mkd
from maskedkd.data.audio import SAMPLE_RATE, write_wav
from maskedkd.data.esc50 import ESC50_COLUMNS
from maskedkd.data.sounds import SOUND_CLASSES, render_sound_event


def timm_model(name, seed=0, **kw):
    """A timm model at random init in eval mode, every parameter nudged so biases, layer scales and
    tokens are non-trivial (timm zero-inits biases and sets layer scale to 1e-6)."""
    import timm
    torch.manual_seed(seed)
    m = timm.create_model(name, pretrained=False, **kw).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith(".gamma"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return m


def timm_cfg(name, **kw):
    """Our config for the same timm preset and overrides."""
    return mkd.vit_config(name, **kw)


def assert_entry_points_equal(ref, params, x, cfg, atol=1e-5):
    """The reference module's logits on x equal ours through forward, teacher_forward (every patch) and
    student_forward; returns the student scores."""
    with torch.no_grad():
        want = ref(x)
        outs = [mkd.forward(params, x, cfg), mkd.teacher_forward(params, x, cfg)]
        logits, scores = mkd.student_forward(params, x, cfg)
    assert want.abs().max() > 1e-2  # the logits are not trivially small
    for out in (*outs, logits):
        torch.testing.assert_close(out, want, atol=atol, rtol=atol)
    return scores


def write_esc50_fixture(root, *, classes: tuple[int, ...] = (0, 1, 2), clips_per_fold: int = 1,
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
