"""The ImageFolder path is DeiT's recipe as timm builds it; its randomness is keyed per sample and per step, differs
across ranks, survives persistent workers and mid-epoch resume; evaluation is sharded exactly over ranks."""
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from maskedkd.experiments import TrainConfig
from maskedkd.data.images import (IMAGENET_MEAN, IMAGENET_STD, deit_eval_transform, deit_train_transform,
                                  mixup_cutmix)
from maskedkd.data.loaders import DigitsData, FolderData, TensorData

timm_data = pytest.importorskip("timm.data")

DEIT_TRAIN = dict(is_training=True, color_jitter=0.3, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic",
                  re_prob=0.25, re_mode="pixel", re_count=1)
INCREASING_OPS = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                  "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                  "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]


def _image(h=70, w=90, seed=0):
    """A structured RGB image (gradients, a square, noise): every augmentation changes it visibly."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1) + g.uniform(0, 40, (h, w, 3))
    arr[h // 4: h // 2, w // 3: w // 2] = (250, 20, 60)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _folder(root, classes=3, n_train=4, n_val=5):
    """root/{train,val}/cK/i.jpg: small generated JPEGs of a few sizes."""
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                _image(60 + 4 * i, 72 + 3 * c, seed=100 * c + i + (0 if split == "train" else 50)).save(
                    root / split / f"c{c}" / f"{i}.jpg", quality=90)
    return root


def _cfg(root, **kw):
    return TrainConfig(**{"data": "imagefolder", "data_path": str(root), "img_size": 64, "batch_size": 4,
                          "num_workers": 0, "seed": 3, "repeated_aug": 3, **kw})


def test_train_transform_is_deits_configuration():
    size = 64
    t = deit_train_transform(size).transforms
    names = [type(x).__name__ for x in t]
    assert names == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment", "MaybeToTensor",
                     "Normalize", "RandomErasing"]  # no ColorJitter: timm drops it under RandAugment, as for DeiT
    crop, flip, ra, _, norm, erase = t
    from torchvision.transforms import InterpolationMode
    assert crop.size == (size, size) and crop.scale == (0.08, 1.0) and crop.ratio == (3 / 4, 4 / 3)
    assert crop.interpolation == InterpolationMode.BICUBIC and flip.p == 0.5
    assert ra.num_layers == 2 and ra.choice_weights is None  # 2 ops, uniform, with replacement
    assert [op.name for op in ra.ops] == INCREASING_OPS  # inc1
    for op in ra.ops:
        assert (op.prob, op.magnitude, op.magnitude_std, op.magnitude_max) == (0.5, 9, 0.5, None)
        assert op.hparams["translate_const"] == int(size * 0.45) and op.kwargs["fillcolor"] == (124, 116, 104)
        assert op.kwargs["resample"] == Image.BICUBIC
    assert norm.mean.tolist() == pytest.approx(timm_data.IMAGENET_DEFAULT_MEAN)
    assert norm.std.tolist() == pytest.approx(timm_data.IMAGENET_DEFAULT_STD)
    assert (IMAGENET_MEAN, IMAGENET_STD) == (timm_data.IMAGENET_DEFAULT_MEAN, timm_data.IMAGENET_DEFAULT_STD)
    assert (erase.probability, erase.mode, erase.min_count, erase.max_count) == (0.25, "pixel", 1, 1)
    assert erase.per_pixel and erase.num_splits == 0


def _seed_all(s):
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def test_train_transform_outputs_equal_timms_create_transform():
    img, ours, ref = _image(), deit_train_transform(64), timm_data.create_transform(64, **DEIT_TRAIN)
    outs = []
    for s in range(12):
        _seed_all(s)
        a = ours(img)
        _seed_all(s)
        b = ref(img)
        assert a.shape == (3, 64, 64) and torch.equal(a, b)
        outs.append(a)
    assert len({o.sum().item() for o in outs}) == len(outs)  # the seeds give different augmentations


SIGNED_OPS = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
              "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}  # level drawn with a random sign


@pytest.mark.parametrize("hw", [(64, 64), (7, 5)])
def test_every_randaugment_op_survives_its_extreme_magnitudes(hw, monkeypatch):
    """Each of the 15 ops at magnitude 0 and 10 (the clip range of N(9, 0.5)), both signs where the sign is drawn,
    applied for sure: a PIL image of the same size and mode comes back. Posterize keeps 4 - level bits, so at 10 it
    keeps none: a black image (DeiT's Pillow), and at every level it equals masking the bytes by hand."""
    import timm.data.auto_augment as aa
    ra = deit_train_transform(64).transforms[2]
    img = _image(*hw, seed=5)
    for op in ra.ops:
        for magnitude in (0.0, 10.0):
            for draw in ((0.0, 0.9) if op.name in SIGNED_OPS else (0.0,)):
                monkeypatch.setattr(aa.random, "random", lambda d=draw: d)  # > 0.5 negates the level
                args = op.level_fn(magnitude, op.hparams) if op.level_fn else ()
                out = op.aug_fn(img, *args, **op.kwargs)
                assert isinstance(out, Image.Image) and (out.size, out.mode) == (img.size, img.mode), op.name
    posterize = next(op for op in ra.ops if op.name == "PosterizeIncreasing")
    arr = np.asarray(img)
    for magnitude, bits in ((0.0, 4), (5.0, 2), (9.99, 1), (10.0, 0)):
        (got,) = posterize.level_fn(magnitude, posterize.hparams)
        assert got == bits
        mask = 0xFF & ~(2 ** (8 - bits) - 1)
        assert np.array_equal(np.asarray(posterize.aug_fn(img, bits, **posterize.kwargs)), arr & mask)
    assert not np.asarray(posterize.aug_fn(img, 0)).any()


def test_train_transform_survives_20000_draws():
    """The whole train transform, 20,000 draws on small generated images from fixed seeds (the draws that keep 0
    posterize bits, ~0.15% of images, are among them): every output finite and of the right shape."""
    t = deit_train_transform(16)
    zero_bit = []
    for op in t.transforms[2].ops:
        if op.name == "PosterizeIncreasing":
            inner = op.aug_fn
            op.aug_fn = lambda im, bits, f=inner, **kw: (zero_bit.append(bits == 0), f(im, bits, **kw))[1]
    g = np.random.default_rng(0)
    imgs = [Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8))
            for h, w in ((20, 24), (24, 18), (16, 16), (30, 22))]
    _seed_all(0)
    for i in range(20_000):
        out = t(imgs[i % len(imgs)])
        assert out.shape == (3, 16, 16) and torch.isfinite(out).all(), i
    assert sum(zero_bit) >= 10  # the seed does exercise the 0-bit draw (33 of 20,000 draws at the time of writing)


@pytest.mark.parametrize("size,hw", [(224, (300, 260)), (224, (256, 400)), (64, (70, 90)), (64, (101, 77))])
def test_eval_transform_equals_deits_torchvision_pipeline(size, hw):
    """DeiT's datasets.py: Resize(int(size / 0.875), bicubic), CenterCrop(size), ToTensor, Normalize."""
    from torchvision import transforms as T
    deit = T.Compose([T.Resize(int(size / 0.875), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(timm_data.IMAGENET_DEFAULT_MEAN, timm_data.IMAGENET_DEFAULT_STD)])
    img = _image(*hw, seed=size)
    a, b = deit_eval_transform(size)(img), deit(img)
    assert a.shape == (3, size, size) and torch.equal(a, b)


def test_mixup_is_deits():
    m = mixup_cutmix(7)
    assert isinstance(m, timm_data.Mixup)
    assert (m.mixup_alpha, m.cutmix_alpha, m.cutmix_minmax, m.mix_prob, m.switch_prob, m.mode) == (
        0.8, 1.0, None, 1.0, 0.5, "batch")
    assert (m.label_smoothing, m.num_classes, m.correct_lam, m.mixup_enabled) == (0.1, 7, True, True)


def test_odd_batch_per_process_with_mixup_is_refused(tmp_path):
    root = _folder(tmp_path / "d")
    with pytest.raises(ValueError, match=r"batch_size=6 over 2 process\(es\) gives 3"):
        FolderData(_cfg(root, batch_size=6, mixup=True), rank=0, world=2)
    FolderData(_cfg(root, batch_size=6, mixup=False), rank=0, world=2)  # without mixup an odd batch is fine


def _samples(data, epoch):
    """{(image index, position): augmented tensor} of this rank's epoch, raw (before to_device)."""
    idx = data.sampler.indices()
    xs = torch.cat([x for x, _ in data.train_batches(epoch)])
    return [(i, x) for i, x in zip(idx, xs)]


def test_repeated_copies_differ_across_ranks_and_a_key_reproduces(tmp_path):
    root = _folder(tmp_path / "d")
    r0, r1 = (FolderData(_cfg(root, mixup=False), rank=r, world=2) for r in (0, 1))
    s0, s1 = _samples(r0, 0), _samples(r1, 0)
    assert len(s0) == len(s1) == 6
    shared = {i for i, _ in s0} & {i for i, _ in s1}
    assert shared  # repeated augmentation sends copies of an image to both ranks
    for i in shared:
        for a in (x for j, x in s0 if j == i):
            for b in (x for j, x in s1 if j == i):
                assert not torch.equal(a, b)
    again = _samples(FolderData(_cfg(root, mixup=False), rank=0, world=2), 0)
    assert all(i == j and torch.equal(a, b) for (i, a), (j, b) in zip(s0, again))
    other = _samples(r0, 1)
    assert not all(torch.equal(a, b) for (_, a), (_, b) in zip(s0, other))  # another epoch, other draws


def _epoch(data, epoch, start=0):
    out = []
    for x, y in data.train_batches(epoch, start):
        x, y = data.to_device(x, y, torch.device("cpu"))
        out.append((x.clone(), y.clone()))
    return out


def test_resume_mid_epoch_is_exact_with_persistent_workers_and_mixup(tmp_path):
    root = _folder(tmp_path / "d", n_train=6)
    cfg = _cfg(root, mixup=True, num_workers=2, repeated_aug=1)
    d = FolderData(cfg)
    assert d.train_loader.persistent_workers and d.steps_per_epoch == 4
    e0, e1 = _epoch(d, 0), _epoch(d, 1)
    assert all(y.shape == (4, 3) for _, y in e0)  # soft targets: mixup + smoothing ran in to_device
    assert not torch.equal(e0[0][0], e1[0][0])
    loader_workers = d.train_loader._iterator  # the same worker processes serve every epoch
    again = _epoch(d, 1, start=2)  # same object, persistent workers that already ran two epochs
    assert d.train_loader._iterator is loader_workers
    fresh = _epoch(FolderData(cfg.replace(num_workers=0)), 1, start=2)  # a restarted process, no workers
    for got in (again, fresh):
        assert len(got) == 2
        for (xa, ya), (xb, yb) in zip(e1[2:], got):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loading_and_mixing_leave_the_global_rngs_alone(tmp_path):
    root = _folder(tmp_path / "d")
    d = FolderData(_cfg(root, mixup=True))
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    batches = _epoch(d, 0)
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
    assert len(batches) == d.steps_per_epoch == 3


def test_to_device_mixes_training_batches_only(tmp_path):
    d = FolderData(_cfg(_folder(tmp_path / "d"), mixup=True))
    (x, y), = [next(iter(d.eval_batches()))]
    x2, y2 = d.to_device(x, y, torch.device("cpu"))
    assert torch.equal(x2, x) and torch.equal(y2, y) and y2.dtype == torch.int64
    x, y = next(iter(d.train_batches(0)))
    assert y.dtype == torch.int64 and x.dtype == torch.float32  # raw CPU batch
    xm, ym = d.to_device(x.clone(), y, torch.device("cpu"))  # a copy is not the batch handed out: no mixing
    assert ym.ndim == 1
    xm, ym = d.to_device(x, y, torch.device("cpu"))
    assert ym.shape == (4, 3) and torch.allclose(ym.sum(-1), torch.ones(4))
    assert ym.min() >= 0.1 / 3 - 1e-6  # label smoothing 0.1 over 3 classes


def _cat(batches):
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


def test_eval_shards_cover_the_set_exactly_once(tmp_path):
    """Rank r of w evaluates samples r, r + w, ...: the shards are disjoint, cover the set, and are not padded."""
    root = _folder(tmp_path / "d", n_val=5)  # 15 images: 8 / 7 over 2 ranks, 5 / 5 / 5 over 3
    whole = FolderData(_cfg(root, batch_size=12))
    xs, ys = _cat(whole.eval_batches())
    assert len(ys) == whole.eval_size == 15
    for world in (2, 3):
        for r in range(world):
            x, y = _cat(FolderData(_cfg(root, batch_size=12), r, world).eval_batches())
            assert torch.equal(x, xs[r::world]) and torch.equal(y, ys[r::world])
    cfg = TrainConfig(data="digits", train_size=64, test_size=50, batch_size=8)
    t = {"x_train": torch.randn(16, 4), "y_train": torch.arange(16) % 3, "x_test": torch.randn(11, 4),
         "y_test": torch.arange(11) % 3}
    for make in (lambda r, w: DigitsData(cfg, r, w), lambda r, w: TensorData(cfg.replace(batch_size=4), t, 3, r, w)):
        x1, y1 = _cat(make(0, 1).eval_batches(batch=4))
        assert len(y1) == make(0, 3).eval_size
        for r in range(3):
            x, y = _cat(make(r, 3).eval_batches(batch=4))
            assert torch.equal(x, x1[r::3]) and torch.equal(y, y1[r::3])


def test_to_device_on_every_source():
    cfg = TrainConfig(data="digits", train_size=64, test_size=50, batch_size=8)
    t = {k: torch.randn(16, 4) if k[0] == "x" else torch.arange(16) % 3 for k in ("x_train", "y_train", "x_test",
                                                                                  "y_test")}
    for d in (DigitsData(cfg), TensorData(cfg, t, 3)):
        x, y = next(iter(d.train_batches(0)))
        x2, y2 = d.to_device(x, y, torch.device("cpu"))
        assert torch.equal(x2, x) and torch.equal(y2, y)


def test_core_imports_without_timm():
    """timm is needed by the ImageFolder recipe only: the package, the training program and the loaders import
    without it, and the recipe says what is missing."""
    code = ("import sys; sys.modules['timm'] = None\n"
            "import maskedkd, maskedkd.train, maskedkd.data.loaders, maskedkd.data.images as im\n"
            "try:\n    im.deit_train_transform()\nexcept ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "needs timm" in r.stdout


# --- the device path (TrainConfig.device_aug): workers send uint8, the device normalises and erases -------------------


def test_the_uint8_path_is_timms_transform_up_to_the_device_normalisation():
    """Under the same seeds the prefetcher path's uint8 image, normalised as timm's PrefetchLoader does, equals the
    worker path's float image (erasing set aside: it comes last in both): the same crop, flip and RandAugment."""
    from maskedkd.data.images import _with_zero_bit_posterize, device_normalise, seeded_rngs
    no_erase = _with_zero_bit_posterize(timm_data.create_transform(**{**DEIT_TRAIN, "input_size": 64, "re_prob": 0.0}))
    uint8 = deit_train_transform(64, uint8=True)
    for k in range(40):
        img = _image(seed=k)
        with seeded_rngs((k, 7)):
            want = no_erase(img)
        with seeded_rngs((k, 7)):
            got = uint8(img)
        assert got.dtype == torch.uint8 and got.shape == (3, 64, 64)
        torch.testing.assert_close(device_normalise(got[None])[0], want, rtol=0, atol=1e-5)


def test_device_aug_erases_a_quarter_of_the_images_and_resumes_exactly(tmp_path):
    """device_aug: the training batches come as uint8, to_device normalises, erases (p 0.25 per image, per-pixel
    normal values) and mixes, seeded by the step: an epoch resumed mid-way gives the same batches."""
    root = _folder(tmp_path / "d", n_train=6)
    cfg = _cfg(root, mixup=False, device_aug=True, repeated_aug=1, batch_size=2)
    d = FolderData(cfg)
    x, _ = next(iter(d.train_batches(0)))
    assert x.dtype == torch.uint8
    e1 = _epoch(d, 1)
    assert all(b.dtype == torch.float32 for b, _ in e1)
    again = _epoch(FolderData(cfg), 1, start=3)
    for (xa, ya), (xb, yb) in zip(e1[3:], again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    from maskedkd.data.images import device_erasing, device_normalise, seeded_rngs
    flat = device_normalise(torch.full((2000, 3, 8, 8), 128, dtype=torch.uint8))
    with seeded_rngs((0,)):
        erased = device_erasing("cpu")(flat.clone())
    hit = (erased != flat).flatten(1).any(1).float().mean().item()
    assert 0.21 < hit < 0.29  # p = 0.25 per image (2000 draws: 3.4 standard errors either way)


def test_device_aug_belongs_to_imagefolder():
    with pytest.raises(ValueError, match="device_aug=True applies to data imagefolder only"):
        TrainConfig(device_aug=True)


def test_device_randaug_leaves_the_crop_to_the_workers_and_resumes_exactly(tmp_path):
    """device_randaug: the workers crop and flip (the full transform's first draws, RandAugment after them), the
    device runs RandAugment (data.device_ops, equal to timm's ops), normalises and erases, seeded by the step."""
    crop_flip = deit_train_transform(64, uint8=True, randaugment=False)
    full = deit_train_transform(64, uint8=True)
    assert not any("RandAugment" in type(t).__name__ or "ColorJitter" in type(t).__name__
                   for t in crop_flip.transforms)
    assert [type(t).__name__ for t in crop_flip.transforms] == [type(t).__name__ for t in full.transforms
                                                                if type(t).__name__ != "RandAugment"]
    root = _folder(tmp_path / "d", n_train=6)
    cfg = _cfg(root, mixup=False, device_aug=True, device_randaug=True, repeated_aug=1, batch_size=2)
    e1 = _epoch(FolderData(cfg), 1)
    again = _epoch(FolderData(cfg), 1, start=3)
    assert len(again) == len(e1) - 3
    for (xa, ya), (xb, yb) in zip(e1[3:], again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    plain = _epoch(FolderData(cfg.replace(device_randaug=False)), 1)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, e1))  # RandAugment changed some images
    with pytest.raises(ValueError, match="device_randaug=true runs RandAugment on the device's uint8 batch"):
        cfg.replace(device_aug=False)
    with pytest.raises(ValueError, match="randaugment=False leaves RandAugment to the device"):
        deit_train_transform(64, randaugment=False)
