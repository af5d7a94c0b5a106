"""The sound sets' training options (label noise, SpecAugment as AST trains) and the refusal of an option that
the named data source would ignore."""
import re

import pytest
import torch

from maskedkd.data.sounds import SYNTH_MEAN, SYNTH_STD

from maskedkd.data.audio import SpecAugment
from maskedkd.data.loaders import build_data, noisy_labels
from maskedkd.experiments import TrainConfig, get_config
from maskedkd.train import run

SOUNDS = dict(data="sounds", model="sounds_student", train_size=64, test_size=32, batch_size=16, epochs=1,
              lr=1e-3, warmup_epochs=0, compile=False, drop_path=0.0)
MASK = -SYNTH_MEAN / (2 * SYNTH_STD)  # the synthetic set's normalised fbank zero, AST's mask value


@pytest.mark.parametrize("field, value, data", [
    ("copies", 3, "sounds"), ("batch_aug", True, "sounds"), ("label_noise", 0.2, "imagefolder"),
    ("freq_mask", 8, "digits"), ("time_mask", 8, "imagefolder"), ("fold", 2, "sounds"), ("mixup", False, "digits"),
    ("repeated_aug", 1, "sounds"), ("fresh_clutter", False, "esc50"), ("events", 3, "digits"), ("events", 2, "esc50")])
def test_an_option_of_another_data_source_is_refused_naming_it(field, value, data):
    with pytest.raises(ValueError, match=f"{field}={value!r} applies to data .* not data='{data}'"):
        TrainConfig(data=data, **{field: value})


@pytest.mark.parametrize("field, value, data", [
    ("distractors", 1, "digits"), ("label_noise", 0.2, "sounds"), ("label_noise", 0.2, "digits"),
    ("freq_mask", 8, "esc50"), ("time_mask", 8, "sounds"), ("fold", 2, "esc50"), ("mixup", False, "imagefolder"),
    ("events", 3, "sounds")])
def test_an_option_of_its_own_data_source_is_accepted(field, value, data):
    scene = {"copies": 2, "jitter": 0} if field == "distractors" else {}  # a distractor needs two copies, no jitter
    assert getattr(TrainConfig(data=data, **scene, **{field: value}), field) == value


@pytest.mark.parametrize("bad", [-1, True])
def test_a_bad_specaugment_width_is_refused(bad):
    with pytest.raises(ValueError, match=re.escape(f"freq_mask={bad!r} must ") + r"(lie in \[0, inf\)|be an integer)"):
        TrainConfig(data="sounds", freq_mask=bad)


def test_sound_label_noise_flips_the_training_labels_once_for_every_run():
    clean = build_data(TrainConfig(**{**SOUNDS, "train_size": 160}))
    cfgs = [TrainConfig(**{**SOUNDS, "train_size": 160}, label_noise=0.25, seed=s) for s in (0, 1)]
    noisy = [build_data(c) for c in cfgs]
    y0, y = clean.t["y_train"], noisy[0].t["y_train"]
    assert torch.equal(noisy[1].t["y_train"], y)  # one labelling of the one fixed set, whatever the student seed
    assert torch.equal(y, noisy_labels(y0, 0.25, 0, 10))
    assert 0.15 < (y != y0).float().mean().item() < 0.35
    assert torch.equal(noisy[0].t["y_test"], clean.t["y_test"])  # the test set stays clean
    assert torch.equal(noisy[0].t["x_train"], clean.t["x_train"])


def test_specaugment_batches_mask_one_band_each_way_and_are_a_function_of_the_step():
    cfg = TrainConfig(**SOUNDS, freq_mask=20, time_mask=30)
    plain, aug = build_data(TrainConfig(**SOUNDS)), build_data(cfg)
    rng = torch.get_rng_state()
    got = list(aug.train_batches(0))
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left as it was
    ref = list(plain.train_batches(0))
    assert len(got) == len(ref) == 4
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, ref))  # labels untouched
    masked_any = 0
    for (xa, _), (xr, _) in zip(got, ref):
        changed = xa != xr
        assert torch.all(xa[changed] == MASK)
        for c in changed[:, :98]:  # (t f) of the 98 real frames (the 2 padded ones already hold the mask value):
            rows, cols = c.all(1), c.all(0)  # every changed entry lies in a full time band or a full bin band
            assert torch.equal(c, rows[:, None] | cols[None, :])
            for band, width in ((rows, 30), (cols, 20)):
                idx = band.nonzero().flatten()
                assert len(idx) < width and (len(idx) == 0 or idx[-1] - idx[0] + 1 == len(idx))
            masked_any += bool(c.any())
    assert masked_any > len(got) * 16 // 2
    again = list(build_data(cfg).train_batches(0))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, again))
    tail = list(build_data(cfg).train_batches(0, start=2))  # a resumed epoch draws the masks of its own steps
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got[2:], tail))
    other = list(build_data(cfg).train_batches(1))
    assert not torch.equal(got[0][0], other[0][0])
    assert aug.teacher_rows(0, 0, lambda pool: pool) is None  # no pool logits for a per-step augmented source
    assert plain.teacher_rows(0, 0, lambda pool: pool) is not None
    (xe, _), = aug.eval_batches(batch=10**6)
    (xp, _), = plain.eval_batches(batch=10**6)
    assert torch.equal(xe, xp)  # evaluation sees clean clips


def test_specaugment_equals_the_recipe_transform_under_the_same_seed():
    from maskedkd.data.images import seeded_rngs
    cfg = TrainConfig(**SOUNDS, freq_mask=20, time_mask=30, seed=3)
    (x, _), = list(build_data(cfg).train_batches(0, start=3))
    (xr, _), = list(build_data(TrainConfig(**SOUNDS, seed=3)).train_batches(0, start=3))
    with seeded_rngs((3, 0, 0, 3)):
        want = SpecAugment(freq_mask=20, time_mask=30, mask_value=MASK)(xr)
    assert torch.equal(x, want)


def test_specaugment_wider_than_the_clip_is_refused():
    with pytest.raises(ValueError, match="freq_mask=200 / time_mask=0 exceed the clips' 128 bins / 100 frames"):
        build_data(TrainConfig(**SOUNDS, freq_mask=200))


def test_a_sound_teacher_recipe_with_specaugment_and_label_noise_trains(tmp_path):
    s = run(TrainConfig(**SOUNDS, freq_mask=24, time_mask=20, label_noise=0.2, out_dir=str(tmp_path / "a")))
    assert s["steps"] == 4 and len(s["history"]) == 1 and 0.0 <= s["final_acc"] <= 1.0
    assert get_config("sounds_teacher").freq_mask == 0  # the registered recipes are unchanged by these options


def test_sound_regime_trials_log_to_their_own_file(tmp_path, monkeypatch):
    """`--task sounds`: a teacher trial with its random-patch curve and a students trial (no KD and logit KD per
    seed) on the sound set, logged apart from the image regime's trials; students see the teacher's labels."""
    import json

    from reproduce import regime_trials as rt
    logs = {"digits": tmp_path / "digits.jsonl", "sounds": tmp_path / "sounds.jsonl"}
    monkeypatch.setattr(rt, "LOGS", logs)
    monkeypatch.setattr(rt, "WORK", tmp_path / "work")
    small = ["epochs=1", "train_size=48", "test_size=20", "batch_size=16", "warmup_epochs=0"]
    rt.main(["--task", "sounds", "teacher", "T0", *small, "label_noise=0.1", "freq_mask=8"])
    rt.main(["--task", "sounds", "students", "S0", "T0", *small, "--seeds", "0", "--jobs", "2"])
    rt.main(["--task", "sounds", "note", "S0", "a decision"])
    assert not logs["digits"].exists()
    t, st, note = [json.loads(line) for line in logs["sounds"].read_text().splitlines()]
    assert (t["kind"], st["kind"], note["kind"]) == ("teacher", "students", "note")
    assert set(t["random_curve"]) == {"100", "75", "50", "40", "25"}
    c = t["random_curve"]
    assert t["random_half_over_full"] == (pytest.approx(c["50"] / c["100"], abs=1e-3) if c["100"] else None)
    assert sorted(st["histories"]) == ["trial_sounds_S0_kd-s0", "trial_sounds_S0_nokd-s0"]
    assert st["kd_minus_nokd"] == [pytest.approx(100 * (st["kd"][0] - st["nokd"][0]), abs=0.01)]
    cfg = json.loads((tmp_path / "work" / "configs" / "trial_sounds_teacher_T0.json").read_text())
    assert (cfg["data"], cfg["model"], cfg["label_noise"], cfg["freq_mask"]) == ("sounds", "sounds_teacher", 0.1, 8)
    from reproduce.lib.regime import trials_table
    assert trials_table(logs["sounds"]).endswith("| note | S0 |  | a decision |")


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_a_bad_event_count_is_refused(bad):
    with pytest.raises(ValueError, match=re.escape(f"events={bad!r} must ") + r"(lie in \[1, inf\)|be an integer)"):
        TrainConfig(data="sounds", events=bad)


def _single_event_clip_as_first_written(label, rng, seconds=1.0):
    """The one-event clip as the set drew it before `events` existed (its draw order and normalisation), written
    out again here: events=1 must draw exactly this."""
    import numpy as np

    from maskedkd.data.audio import SAMPLE_RATE

    from maskedkd.data.sounds import SOUND_CLASSES, _event
    n = int(round(seconds * SAMPLE_RATE))
    m = int(n * rng.uniform(0.3, 0.7))
    start = int(rng.integers(0, n - m + 1))
    env = np.ones(m)
    ramp = SAMPLE_RATE // 100
    env[:ramp], env[-ramp:] = np.linspace(0, 1, ramp), np.linspace(1, 0, ramp)
    ev = np.zeros(n)
    ev[start:start + m] = _event(SOUND_CLASSES[label], rng, m) * env
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec /= np.maximum(f, 20.0) ** (rng.uniform(0, 1.5) / 2)
    bg = np.fft.irfft(spec, n)
    level = 10 ** rng.uniform(-1.6, -0.8)
    x = level * (ev / (ev[start:start + m].std() + 1e-12) + 10 ** (-rng.uniform(0, 30) / 20) * bg / bg.std())
    return np.clip(x, -1.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("label", range(10))
def test_one_event_per_clip_draws_the_former_clip_bit_for_bit(label):
    import numpy as np

    from maskedkd.data.sounds import render_sound_event
    for i in range(3):
        new = render_sound_event(label, np.random.default_rng([0, 0, 10 * i + label]), events=1)
        old = _single_event_clip_as_first_written(label, np.random.default_rng([0, 0, 10 * i + label]))
        assert np.array_equal(new, old)


def test_several_events_repeat_the_class_across_the_clip():
    """Three events of a tone class put energy in more frequency bands than one (each event draws its own
    frequency), and the config option reaches the set's clips."""
    import numpy as np

    from maskedkd.data.sounds import render_sound_event

    def bands(x):  # spectral peaks above a tenth of the largest, in 50 Hz bins
        mag = np.abs(np.fft.rfft(x))
        binned = mag[: len(mag) // 25 * 25].reshape(-1, 25).max(1)
        return int((binned > 0.1 * binned.max()).sum())
    one = [bands(render_sound_event(0, np.random.default_rng([7, i]), events=1)) for i in range(20)]
    three = [bands(render_sound_event(0, np.random.default_rng([7, i]), events=3)) for i in range(20)]
    assert np.mean(three) > 1.5 * np.mean(one), (one, three)
    x1 = build_data(TrainConfig(**SOUNDS)).eval_batches(batch=10**6)
    x3 = build_data(TrainConfig(**SOUNDS, events=3)).eval_batches(batch=10**6)
    (a, ya), = x1
    (b, yb), = x3
    assert torch.equal(ya, yb) and not torch.equal(a, b)


@pytest.mark.parametrize("cfg", [TrainConfig(**SOUNDS, events=3), TrainConfig(**SOUNDS, label_noise=0.3),
                                 get_config("digits_student_nokd").replace(train_size=64, test_size=40)])
def test_the_test_split_alone_equals_the_eval_batch_of_the_whole_data_set(cfg):
    from maskedkd.data.loaders import fixed_test_set
    (x, y), = build_data(cfg).eval_batches(batch=10**6)
    xt, yt = fixed_test_set(cfg)
    assert torch.equal(x, xt) and torch.equal(y, yt) and len(y) == cfg.test_size


def test_the_esc50_runs_are_the_ast_recipe_and_carry_nothing_of_the_embedded_sound_regime(tmp_path):
    """audio.sh --full writes its ESC-50 config out in full: the embedded student's label noise, events and batch
    (the embedded sound regime's) must not reach it, and each row and fold gets its own run directory."""
    import helpers as H
    from maskedkd.data.audio import ESC50_SPECAUG
    from reproduce.audio import FRACTIONS, esc50_run
    embedded = get_config("sounds_student_nokd")
    assert embedded.label_noise > 0 and embedded.events > 1  # what must not leak
    cfgs = [esc50_run("/data/ESC-50", k, tmp_path, t, f) for k in range(1, 6)
            for t, f in [("", 1.0), ("t.safetensors", 1.0)] + [("t.safetensors", f) for f in FRACTIONS]]
    assert len({c.out_dir for c in cfgs}) == len({c.name for c in cfgs}) == len(cfgs) == 35
    for c in cfgs:
        assert (c.data, c.model, c.label_noise, c.events, c.batch_size, c.epochs) == ("esc50", "esc50_student", 0.0,
                                                                                     1, 48, 25)
        assert c.lr * 48 / 512 == pytest.approx(1e-5) and (c.freq_mask, c.time_mask) == tuple(ESC50_SPECAUG.values())
        assert (c.teacher_model == "esc50_teacher") == bool(c.teacher)
    assert {c.keep_ratio for c in cfgs if c.teacher} == {1.0, *FRACTIONS}
    root = H.write_esc50_fixture(tmp_path / "ESC-50", classes=(0, 1), clips_per_fold=1, seconds=0.5)
    data = build_data(esc50_run(str(root), 3, tmp_path).replace(batch_size=2))
    assert data.num_classes == 50


def test_a_sound_split_is_made_once_then_read_from_the_cache_bit_for_bit(tmp_path, monkeypatch):
    """loaders.sound_split keeps each split of the synthetic set in the data cache: the first call makes it (equal to
    synthetic_sound_events), the next reads it without making anything; another size, event count or split is
    another entry; a damaged or mislabelled file raises naming it instead of feeding a run wrong clips."""
    from safetensors.torch import save_file

    from maskedkd.data import loaders, sounds
    monkeypatch.setenv("MASKEDKD_CACHE", str(tmp_path))
    fresh = sounds.synthetic_sound_events(n_train=12, n_test=6, seed=0, events=2)
    x, y = loaders.sound_split("train", 12, 2)
    assert torch.equal(x, fresh["x_train"]) and torch.equal(y, fresh["y_train"])
    xt, yt = loaders.sound_split("test", 6, 2)
    assert torch.equal(xt, fresh["x_test"]) and torch.equal(yt, fresh["y_test"])
    files = sorted((tmp_path / "data").glob("*.safetensors"))
    assert len(files) == 2

    def made(**kw):
        raise RuntimeError(f"made {kw}")
    monkeypatch.setattr(sounds, "synthetic_sound_events", made)
    again = loaders.sound_split("train", 12, 2)  # read back, nothing made
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    for split, n, events in [("train", 13, 2), ("train", 12, 3), ("test", 12, 2)]:
        with pytest.raises(RuntimeError, match="made"):
            loaders.sound_split(split, n, events)
    with pytest.raises(ValueError, match="split='val'"):
        loaders.sound_split("val", 12, 2)
    train_file = next(f for f in files if "-train-" in f.name)
    save_file({"x": x[:11].contiguous(), "y": y[:11].contiguous()}, str(train_file))
    with pytest.raises(ValueError, match=f"{train_file.name} holds x \\(11, "):
        loaders.sound_split("train", 12, 2)
    train_file.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"{train_file.name} is unreadable"):
        loaders.sound_split("train", 12, 2)
