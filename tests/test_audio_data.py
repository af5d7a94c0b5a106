"""Sound data: the AST fbank recipe against torchaudio and transformers, SpecAugment, WAV files, the synthetic
sound-event set (deterministic, not linearly solvable), the ESC-50 loader on a generated fixture, bad input."""
import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from maskedkd.data import audio as A, esc50 as E, sounds as S
import helpers as H


@pytest.fixture(scope="module")
def wave():
    return S.render_sound_event(3, np.random.default_rng(0), seconds=1.0)  # 16 000 samples -> 98 frames


def test_fbank_is_the_ast_recipe(wave):
    w = torch.from_numpy(wave)
    want = kaldi.fbank((w - w.mean())[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                       window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    assert want.shape == (98, 128)
    got = A.fbank(wave, 16000, max_length=98, mean=0.0, std=0.5)  # (x - 0) / (2 * 0.5) = x
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    padded = A.fbank(w[None], 16000, max_length=100, mean=-4.0, std=2.0)  # (1, n) is mono too
    torch.testing.assert_close(padded[:98], (want + 4.0) / 4.0)
    assert torch.equal(padded[98:], torch.full((2, 128), 1.0))  # zero frames, normalised: (0 + 4) / 4
    assert torch.equal(A.fbank(wave, 16000, max_length=50, mean=0.0, std=0.5), want[:50])


def test_fbank_equals_transformers_feature_extractor_both_paths(wave, monkeypatch):
    import transformers.models.audio_spectrogram_transformer.feature_extraction_audio_spectrogram_transformer as fe
    ours = A.fbank(wave, 16000, max_length=100)  # AudioSet mean / std: the extractor's defaults
    assert fe.is_speech_available()  # torchaudio present: the extractor calls kaldi.fbank (no mean removal)
    got = fe.ASTFeatureExtractor(max_length=100)(wave, sampling_rate=16000, return_tensors="pt").input_values[0]
    assert got.shape == (100, 128) and ours.abs().max() > 0.5
    torch.testing.assert_close(got, ours, atol=1e-5, rtol=0)
    monkeypatch.setattr(fe, "is_speech_available", lambda: False)  # its own numpy fbank: 1.3e-5 measured
    with pytest.warns(UserWarning, match="mel filter has all zero values"):
        ext = fe.ASTFeatureExtractor(max_length=100)
    got_np = ext(wave, sampling_rate=16000, return_tensors="pt").input_values[0]
    torch.testing.assert_close(got_np, ours, atol=1e-4, rtol=0)


def test_bad_waveforms_are_rejected(wave):
    with pytest.raises(ValueError, match="sample_rate=44100"):
        A.fbank(wave, 44100)
    with pytest.raises(ValueError, match=r"mono.*\(2, 16000\)"):
        A.fbank(np.stack([wave, wave]), 16000)
    with pytest.raises(ValueError, match="empty"):
        A.fbank(np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="num_mel_bins=2"):
        A.fbank(wave, 16000, num_mel_bins=2)
    with pytest.raises(ValueError, match="fewer than one 25 ms window"):
        A.fbank(wave[:100], 16000)
    with pytest.raises(ValueError, match="NaN"):
        A.fbank(np.full(16000, np.nan, np.float32), 16000)


def test_spec_augment_masks_one_band_each(wave):
    x = A.fbank(wave, 16000, max_length=100)
    aug = A.SpecAugment(freq_mask=24, time_mask=30, mask_value=7.0)
    torch.manual_seed(0)
    xs = torch.stack([x, x, x])
    y = aug(xs)
    for i in range(3):
        m = y[i] == 7.0
        rows, cols = m.all(dim=1), m.all(dim=0)  # masked frames, masked mel bins
        assert 0 < rows.sum() <= 30 and 0 < cols.sum() <= 24
        assert torch.equal(y[i][~m], x[~m])
        assert torch.equal(m, rows[:, None] | cols[None, :])
    assert not torch.equal(y[0] == 7.0, y[1] == 7.0)  # iid per sample
    assert torch.equal(A.SpecAugment(freq_mask=0, time_mask=0)(x), x)


def test_wav_round_trip_and_formats(tmp_path, wave):
    from scipy.io import wavfile
    A.write_wav(tmp_path / "a.wav", wave, 16000)
    w, sr = A.read_wav(tmp_path / "a.wav")
    assert sr == 16000 and w.dtype == torch.float32
    torch.testing.assert_close(w, torch.from_numpy(wave), atol=1 / 32767, rtol=0)
    wavfile.write(tmp_path / "s.wav", 8000, np.stack([np.full(10, 16384, np.int16), np.zeros(10, np.int16)], 1))
    w, sr = A.read_wav(tmp_path / "s.wav")
    assert sr == 8000 and torch.equal(w, torch.full((10,), 0.25))  # stereo averaged, int16 / 32768
    wavfile.write(tmp_path / "u.wav", 16000, np.array([0, 128, 255], np.uint8))
    assert torch.equal(A.read_wav(tmp_path / "u.wav")[0], torch.tensor([-1.0, 0.0, 127 / 128]))


@pytest.fixture(scope="module")
def synth():
    return S.synthetic_sound_events(n_train=400, n_test=200, seed=0)


def test_synthetic_set_is_deterministic_and_normalised(synth):
    assert synth["x_train"].shape == (400, 100, 128) and synth["x_test"].shape == (200, 100, 128)
    assert torch.equal(torch.bincount(synth["y_train"]), torch.full((10,), 40))
    again = S.synthetic_sound_events(n_train=30, n_test=10, seed=0)
    assert torch.equal(again["x_train"], synth["x_train"][:30]) and torch.equal(again["x_test"], synth["x_test"][:10])
    other = S.synthetic_sound_events(n_train=10, n_test=0, seed=1)
    assert not torch.equal(other["x_train"], synth["x_train"][:10])
    assert not torch.equal(synth["x_train"][:10], synth["x_test"][:10])
    x = synth["x_train"]
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 0.5) < 0.05  # AST's mean 0, std 0.5 convention


def test_synthetic_set_is_not_linearly_solvable(synth):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from threadpoolctl import threadpool_limits

    def acc(pool):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        with threadpool_limits(1):  # BLAS on 2 threads took 15 s instead of 0.3 s beside another process
            clf.fit(pool(synth["x_train"]).numpy(), synth["y_train"].numpy())
        return (clf.predict(pool(synth["x_test"]).numpy()) == synth["y_test"].numpy()).mean()
    mean_acc = acc(lambda x: x.mean(1))
    mean_std_acc = acc(lambda x: torch.cat([x.mean(1), x.std(1)], 1))
    # documented: 33.6% / 48.4% on 2000 / 1000 clips (chance 10%); learnable above chance, far from solved
    assert 0.15 < mean_acc < 0.45 and 0.2 < mean_std_acc < 0.6, (mean_acc, mean_std_acc)


def test_esc50_loader_on_generated_fixture(tmp_path):
    root = H.write_esc50_fixture(tmp_path / "ESC-50-master", classes=(0, 1, 2), clips_per_fold=1, seconds=0.5)
    meta = E.read_esc50_meta(root)
    assert len(meta) == 15 and sorted({r["fold"] for r in meta}) == [1, 2, 3, 4, 5]
    assert meta[0]["filename"] == "1-101000-A-0.wav" and meta[0]["esc10"] is True
    d = E.load_esc50(root, test_fold=2, max_length=64)
    assert d["x_train"].shape == (12, 64, 128) and d["x_test"].shape == (3, 64, 128)
    assert d["y_train"].tolist() == [0, 1, 2] * 4 and d["y_test"].tolist() == [0, 1, 2]
    w, sr = A.read_wav(root / "audio" / "2-102010-A-1.wav")  # 44.1 kHz as in ESC-50: resampled to 16 kHz
    assert sr == 44100 and w.shape == (22050,)
    import torchaudio
    want = A.fbank(torchaudio.functional.resample(w, 44100, 16000), 16000, max_length=64,
                   mean=A.ESC50_MEAN, std=A.ESC50_STD)
    torch.testing.assert_close(d["x_test"][1], want)
    assert torch.equal(d["x_test"][1, 48:], torch.full((16, 128), -A.ESC50_MEAN / (2 * A.ESC50_STD)))  # 48 frames
    e = E.load_esc50(root, test_fold=5, max_length=64, esc10=True)
    assert d["x_test"].shape[0] == 3 and e["y_train"].tolist() == [0, 1] * 4 and e["y_test"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="test_fold=6"):
        E.load_esc50(root, test_fold=6)
    with pytest.raises(FileNotFoundError, match="esc50.csv"):
        E.load_esc50(tmp_path, test_fold=1)
