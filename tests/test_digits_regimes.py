"""The two embedded image regimes: the digit scene's options (copies, size), DeiT's batch augmentation on the
in-memory set, and the cluttered stress regime being the former default recipe under a new name."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from maskedkd.data.images import _digit_sources, N_TRAIN_SOURCES, cluttered_digits
from maskedkd.data.loaders import DigitsData
from maskedkd.experiments import config_hash, get_config
from maskedkd.teachers import ASSETS


@pytest.mark.parametrize("size,copies", [(8, 1), (8, 5), (8, 16), (16, 3), (16, 4)])
def test_copies_are_digits_of_the_label_in_distinct_cells(size, copies):
    x, y = cluttered_digits("train", 12, 3, digit_size=size, copies=copies, jitter=0, num_clutter=0, noise=0.0,
                            normalize=False)
    imgs, labels = _digit_sources(size)
    pool, pool_y = imgs[:N_TRAIN_SOURCES], labels[:N_TRAIN_SOURCES]
    side = 32 // size
    for img, label in zip(x[:, 0].numpy(), y.numpy()):
        cells = [img[r * size:(r + 1) * size, c * size:(c + 1) * size] for r in range(side) for c in range(side)]
        full = [cell for cell in cells if cell.max() > 0]
        if copies == 1:  # one digit at the centre (jitter 0), whatever cells it straddles
            lo = (32 - size) // 2
            assert img[lo:lo + size, lo:lo + size].max() > 0 and np.delete(
                np.delete(img, np.s_[lo:lo + size], 0), np.s_[lo:lo + size], 1).max() == 0
            continue
        assert len(full) == copies  # every other cell is empty (noise 0)
        for cell in full:  # each is a whole source digit of the image's class
            match = np.flatnonzero(np.abs(pool - cell).reshape(len(pool), -1).max(-1) < 1e-6)
            assert len(match) and (pool_y[match] == label).all()


def test_copies_come_from_different_hands():
    x, y = cluttered_digits("test", 50, 0, digit_size=16, copies=4, jitter=0, num_clutter=0, noise=0.0,
                            normalize=False)
    cells = x[:, 0].unfold(1, 16, 16).unfold(2, 16, 16).reshape(50, 4, -1)
    distinct = [len({tuple(c.tolist()) for c in img}) for img in cells]
    assert np.mean(distinct) > 3  # sources drawn with replacement: a repeat is rare


@pytest.mark.parametrize("kw,bad", [(dict(copies=5, digit_size=16, jitter=0), "copies=5"),
                                    (dict(copies=0), "copies=0"),
                                    (dict(copies=2, jitter=9), "jitter=9"),
                                    (dict(texture=1.5), "texture=1.5"),
                                    (dict(digit_size=28, jitter=4), "too small"),
                                    (dict(noise=1.5), "noise=1.5")])
def test_bad_scenes_are_refused_naming_the_value(kw, bad):
    with pytest.raises(ValueError, match=bad):
        cluttered_digits("train", 2, 0, **kw)


@pytest.mark.parametrize("jitter", [1, 4])
def test_grid_jitter_moves_each_copy_within_jitter_px_of_its_cell(jitter):
    kw = dict(digit_size=16, copies=3, num_clutter=0, noise=0.0, normalize=False)
    moved = 0
    for seed in range(20):  # one image per seed: its moves are drawn after its cells and sources
        x, y = cluttered_digits("train", 1, seed, jitter=jitter, **kw)
        base, y0 = cluttered_digits("train", 1, seed, jitter=0, **kw)
        assert torch.equal(y, y0)
        img, ref = x[0, 0], base[0, 0]
        for r in range(2):
            for c in range(2):
                cell = ref[16 * r:16 * (r + 1), 16 * c:16 * (c + 1)]
                if cell.max() == 0:
                    continue
                # the cell's digit reappears (under max with its neighbours) at an offset within jitter px
                fits = []
                for dy in range(-jitter, jitter + 1):
                    for dx in range(-jitter, jitter + 1):
                        top, left = min(max(16 * r + dy, 0), 16), min(max(16 * c + dx, 0), 16)
                        fits.append(bool((img[top:top + 16, left:left + 16] >= cell - 1e-6).all()))
                assert any(fits)
                moved += not fits[len(fits) // 2]
    assert moved > 0  # the copies did move


def test_texture_fills_every_patch_and_leaves_the_untextured_scene_as_it_was():
    kw = dict(digit_size=16, copies=3, jitter=0, num_clutter=0, noise=0.1, normalize=False)
    plain, y = cluttered_digits("test", 30, 0, **kw)
    textured, y2 = cluttered_digits("test", 30, 0, texture=0.4, **kw)
    again, _ = cluttered_digits("test", 30, 0, texture=0.0, **kw)
    assert torch.equal(plain, again) and torch.equal(y, y2)
    spread = textured[:, 0].unfold(1, 4, 4).unfold(2, 4, 4).reshape(30, 64, 16).std(-1)
    blank = plain[:, 0].unfold(1, 4, 4).unfold(2, 4, 4).reshape(30, 64, 16).amax(-1) <= 0.1
    assert blank.float().mean() > 0.2 and (textured >= plain - 1e-6).all()  # digits stay on top (max)
    assert (textured[:, 0].amax((1, 2)) >= 0.4 - 1e-6).all() and spread.median() > 0.01


def _aug_cfg(**kw):
    return get_config("digits_teacher").replace(train_size=256, test_size=50, batch_size=32, batch_aug=True, **kw)


def test_batch_aug_is_a_function_of_seed_epoch_step_and_resumes_exactly():
    d = DigitsData(_aug_cfg())
    whole = list(d.train_batches(1))
    again = list(DigitsData(_aug_cfg()).train_batches(1, start=3))
    assert len(again) == len(whole) - 3
    for (xa, ya), (xb, yb) in zip(whole[3:], again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = list(DigitsData(_aug_cfg(seed=1)).train_batches(1))
    assert not torch.equal(other[0][0], whole[0][0])
    assert not torch.equal(list(d.train_batches(2))[0][0], whole[0][0])  # a new draw of the augmentation per epoch


def test_batch_aug_gives_soft_targets_of_the_batch_classes_and_leaves_the_pool_alone():
    d = DigitsData(_aug_cfg())
    pool_before = d.epoch_data(0)[0].clone()
    (x, y), *_ = d.train_batches(0)
    assert y.shape == (32, 10) and torch.allclose(y.sum(-1), torch.ones(32))
    assert (y.min() >= 0.1 / 10 - 1e-6)  # label smoothing 0.1 spreads 0.01 over every class
    assert torch.equal(d.epoch_data(0)[0], pool_before)  # augmented copies; the pool is not mixed in place
    assert not torch.equal(x, pool_before[:32])
    assert d.teacher_rows(0, 0, lambda pool: pool) is None  # no per-pool logit memo over augmented batches


def test_batch_aug_needs_an_even_batch():
    with pytest.raises(ValueError, match="even batch"):
        DigitsData(_aug_cfg().replace(batch_size=33))


def test_cluttered_stress_regime_is_the_former_default_recipe():
    """The shipped cluttered teacher was trained as digits_teacher; the renamed config is that recipe: the same
    hash once the name is put back, and the asset's metadata matches the new name's hash."""
    record = json.loads((ASSETS / "cluttered_teacher.json").read_text())
    old_name, old_hash = record["trained_as_config"]
    c = get_config("cluttered_teacher")
    assert config_hash(c.replace(name=old_name)) == old_hash == "3841720ac56d"  # the hash the asset was made under
    assert record["config_hash"] == config_hash(c)
    for kind in ("nokd", "kd", "maskedkd50"):
        s = get_config(f"cluttered_student_{kind}")
        assert (s.digit_size, s.copies, s.num_clutter, s.noise, s.batch_aug) == (16, 1, 3, 0.15, False)


@settings(max_examples=25, deadline=None)
@given(max_shift=st.integers(1, 4), b=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_random_shift_moves_each_image_whole_within_its_range(max_shift, b, seed):
    """Each output is its input translated by one (dy, dx) in [-max_shift, max_shift]^2, the uncovered border at the
    fill value: found by trying every offset, so a crop at the wrong place, a transposed window or a mixed-up
    sample fails."""
    from maskedkd.data.images import random_shift
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 2, 12, 10, generator=g) + 1.0  # above the fill everywhere
    torch.manual_seed(seed)
    out = random_shift(x, max_shift, fill=-7.0)
    assert out.shape == x.shape and random_shift(x, 0) is x
    for i in range(b):
        hits = []
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                want = torch.full_like(x[i], -7.0)
                src = x[i][:, max(0, -dy):12 - max(0, dy), max(0, -dx):10 - max(0, dx)]
                want[:, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
                hits += [(dy, dx)] * bool(torch.equal(out[i], want))
        assert len(hits) == 1, (i, hits)


def test_random_shift_draws_every_offset_and_digits_data_moves_training_images_only():
    from maskedkd.data.images import random_shift
    torch.manual_seed(0)
    x = torch.zeros(2000, 1, 8, 8)
    x[:, :, 4, 4] = 1.0  # one lit pixel: where it lands is the offset
    where = random_shift(x, 2, fill=0.0)[:, 0].flatten(1).argmax(1)
    dy, dx = where // 8 - 4, where % 8 - 4
    assert set(dy.tolist()) == set(dx.tolist()) == {-2, -1, 0, 1, 2}  # uniform over [-2, 2]: each about 400 times
    assert all(300 < int((dy == v).sum()) < 500 for v in range(-2, 3))
    cfg = get_config("digits_student_nokd").replace(train_size=64, test_size=20, batch_size=32, shift=4)
    d, plain = DigitsData(cfg), DigitsData(cfg.replace(shift=0))
    pool = d.epoch_data(0)[0].clone()
    (x1, y1), *_ = d.train_batches(0)
    (x0, y0), *_ = plain.train_batches(0)
    assert torch.equal(y1, y0) and not torch.equal(x1, x0) and torch.equal(d.epoch_data(0)[0], pool)
    assert torch.equal(d.test_data()[0], plain.test_data()[0])  # the test scene does not move
    again = list(DigitsData(cfg).train_batches(0, start=1))[0][0]
    assert torch.equal(again, list(d.train_batches(0))[1][0])  # a function of (seed, epoch, step): resumes exactly
    with pytest.raises(ValueError, match="shift"):
        get_config("digits_student_nokd").replace(shift=9)
    with pytest.raises(ValueError, match="shift"):
        get_config("sounds_student_nokd").replace(shift=2)


def test_fixed_places_regime_is_the_former_default_student_and_a_name_changes_no_weight(tmp_path):
    """The fixed-places students are the former default recipe (15 epochs, no shift) with the default's scene and
    teacher weights; its records made under the former names (digits_*, reproduce/reference/fixed_places/) stand for
    the new names because a run's name and its teacher's cache name change nothing it trains: two short runs, one
    under each name, end with equal weights and equal accuracies."""
    import dataclasses
    from safetensors.torch import load_file
    from maskedkd.train import run
    new, default = get_config("fixed_places_student_kd"), get_config("digits_student_kd")
    assert (new.epochs, new.shift, default.epochs, default.shift) == (15, 0, 30, 2)
    assert {f.name for f in dataclasses.fields(new) if getattr(new, f.name) != getattr(default, f.name)} == {
        "name", "teacher", "epochs", "shift"}
    shipped = [load_file(ASSETS / f"{name}.safetensors") for name in ("fixed_places_teacher", "digits_teacher")]
    assert shipped[0].keys() == shipped[1].keys() and all(torch.equal(shipped[0][k], shipped[1][k]) for k in shipped[0])
    small = dict(train_size=64, test_size=64, batch_size=32, epochs=1, eval_every=1, threads=1)
    got = []
    for c in (new, new.replace(name="digits_student_kd", teacher="cache:digits_teacher")):
        out = tmp_path / c.name
        s = run(c.replace(out_dir=str(out), **small), final_params_path=out / "final.safetensors")
        got.append((s["final_acc"], s["history"], load_file(out / "final.safetensors")))
    assert got[0][:2] == got[1][:2]
    assert got[0][2].keys() == got[1][2].keys() and all(torch.equal(got[0][2][k], got[1][2][k]) for k in got[0][2])
