"""maskedkd/data/device_ops.py: each batched colour op equals the PIL op timm's RandAugment applies
(timm.data.auto_augment), bit for bit, every image of a batch at its own magnitude."""
import numpy as np
import pytest
import torch
from PIL import Image

from maskedkd.data import device_ops as D

aa = pytest.importorskip("timm.data.auto_augment")


def _batch(n=12, h=23, w=31, seed=0):
    """Images of many kinds: noise, smooth gradients, a flat one, one with few values, low-contrast ones."""
    g = np.random.default_rng(seed)
    imgs = [g.integers(0, 256, (h, w, 3)) for _ in range(n - 5)]
    yy, xx = np.mgrid[0:h, 0:w]
    imgs.append(np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 100 // (h + w)], -1))
    imgs.append(np.full((h, w, 3), 77))
    imgs.append(g.choice([10, 200], (h, w, 3)))
    imgs.append(g.integers(100, 140, (h, w, 3)))
    imgs.append(np.clip(g.normal(60, 5, (h, w, 3)), 0, 255))
    arr = np.stack(imgs).astype(np.uint8)
    return arr, torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def _pil(arr, op, args):
    return np.stack([np.asarray(op(Image.fromarray(a), *([] if v is None else [v]))) for a, v in zip(arr, args)])


def _ours(x):
    return x.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name, ours, pil, draw", [
    ("invert", lambda x, v: D.invert(x), aa.invert, None),
    ("posterize", D.posterize, aa.posterize, lambda g, n: g.integers(1, 9, n)),  # timm keeps 1-8 bits but at 0
    ("solarize", D.solarize, aa.solarize, lambda g, n: g.integers(0, 257, n)),
    ("solarize_add", D.solarize_add, aa.solarize_add, lambda g, n: g.integers(0, 111, n)),
    ("auto_contrast", lambda x, v: D.auto_contrast(x), aa.auto_contrast, None),
    ("equalize", lambda x, v: D.equalize(x), aa.equalize, None),
    ("brightness", D.brightness, aa.brightness, lambda g, n: g.uniform(0.05, 1.95, n)),
    ("color", D.color, aa.color, lambda g, n: g.uniform(0.05, 1.95, n)),
    ("contrast", D.contrast, aa.contrast, lambda g, n: g.uniform(0.05, 1.95, n)),
    ("sharpness", D.sharpness, aa.sharpness, lambda g, n: g.uniform(0.05, 1.95, n)),
])
def test_each_op_equals_timms_pil_op_per_image(name, ours, pil, draw, seed):
    arr, x = _batch(seed=seed)
    g = np.random.default_rng(100 + seed)
    args = [None] * len(arr) if draw is None else list(draw(g, len(arr)))
    want = _pil(arr, pil, args)
    got = _ours(ours(x, None if draw is None else torch.tensor(np.asarray(args))))
    assert got.dtype == np.uint8 and np.array_equal(got, want), (name, np.argwhere(got != want)[:5])


def test_posterize_keeps_deits_zero_bits_and_a_scalar_applies_to_every_image():
    arr, x = _batch()
    assert D.posterize(x, torch.zeros(len(arr), dtype=torch.int64)).eq(0).all()
    assert torch.equal(D.posterize(x, 8), x)
    assert torch.equal(D.brightness(x, 0.5), D.brightness(x, torch.full((len(arr),), 0.5)))


def _timm_draws(n: int, seed: int = 0):
    """(op name, argument or None) of each op timm's rand-m9-mstd0.5-inc1 applies to n images, recorded by stubbing
    its ops' functions (the draws are timm's own: numpy's choice of 2 ops, python's random for p, magnitude, sign)."""
    import random
    ra = aa.rand_augment_transform("rand-m9-mstd0.5-inc1", {"img_mean": (124, 116, 104)})
    seen = []
    for op in ra.ops:
        op.aug_fn = lambda img, *args, _name=op.name, **kw: seen.append((_name, args[0] if args else None)) or img
    random.seed(seed)
    np.random.seed(seed)
    img = Image.new("RGB", (4, 4))
    for _ in range(n):
        ra(img)
    return seen, [op.name for op in ra.ops]


def test_rand_augment_draws_are_distributed_as_timms():
    """20,000 images each way: which ops apply (a chi-square test on the 15 ops' counts, and the applied share per
    layer), and each op's argument (discrete ones by chi-square on their values, continuous ones by a two-sample
    Kolmogorov-Smirnov test): every p-value above 0.001."""
    from scipy import stats
    n = 20000
    timm_seen, names = _timm_draws(n)
    assert tuple(names) == D.RAND_AUGMENT_OPS
    d = D.rand_augment_draws(n, torch.Generator().manual_seed(0))
    ours = [(D.RAND_AUGMENT_OPS[o], None if a is None else a.item())
            for layer in range(2) for o, a, on in zip(
                d["op"][:, layer].tolist(),
                [D.op_args(D.RAND_AUGMENT_OPS[o], d["magnitude"][i:i + 1, layer], d["negate"][i:i + 1, layer])
                 for i, o in enumerate(d["op"][:, layer].tolist())], d["apply"][:, layer].tolist()) if on]
    assert abs(len(ours) - len(timm_seen)) < 5 * (2 * n * 0.25) ** 0.5  # both apply about half of 2n draws
    count = {k: [sum(1 for name, _ in s if name == k) for s in (timm_seen, ours)] for k in names}
    assert stats.chi2_contingency(np.array(list(count.values()))).pvalue > 1e-3
    for k in names:
        a = [v for name, v in timm_seen if name == k and v is not None]
        b = [v for name, v in ours if name == k and v is not None]
        if not a:
            assert not b
            continue
        if k in ("PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd"):
            vals = sorted(set(a) | set(b))
            table = np.array([[a.count(v) for v in vals], [b.count(v) for v in vals]]) + 1  # +1: no empty cell
            assert stats.chi2_contingency(table).pvalue > 1e-3, k
        else:
            assert stats.ks_2samp(a, b).pvalue > 1e-3, k


GEOMETRIC = [("rotate", D.rotate, aa.rotate, 30.0), ("shear_x", D.shear_x, aa.shear_x, 0.3),
             ("shear_y", D.shear_y, aa.shear_y, 0.3), ("translate_x_rel", D.translate_x_rel, aa.translate_x_rel, 0.45),
             ("translate_y_rel", D.translate_y_rel, aa.translate_y_rel, 0.45)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name, ours, pil, bound", GEOMETRIC)
def test_each_geometric_op_equals_timms_pil_op_with_deits_bicubic_and_fill(name, ours, pil, bound, seed):
    arr, x = _batch(seed=seed)
    args = np.random.default_rng(200 + seed).uniform(-bound, bound, len(arr))
    kw = dict(resample=Image.BICUBIC, fillcolor=D.IMG_MEAN_FILL)  # DeiT's: bicubic, img_mean
    want = np.stack([np.asarray(pil(Image.fromarray(a), float(v), **kw)) for a, v in zip(arr, args)])
    got = _ours(ours(x, torch.tensor(args)))
    assert np.array_equal(got, want), (name, np.argwhere(got != want)[:5])


def test_rand_augment_on_a_batch_equals_timms_ops_at_the_same_draws():
    """A batch's draws applied by rand_augment equal timm's op functions applied image by image, layer by layer, at
    the arguments op_args gives (the draws themselves are compared with timm's above)."""
    arr, x = _batch(n=40, seed=3)
    d = D.rand_augment_draws(len(arr), torch.Generator().manual_seed(1))
    d["apply"][:8] = True  # some images at both layers for sure
    fns = {op.name: op.aug_fn for op in aa.rand_augment_transform(
        "rand-m9-mstd0.5-inc1", {"img_mean": D.IMG_MEAN_FILL, "interpolation": Image.BICUBIC}).ops}
    from maskedkd.data.images import posterize_keeping_zero_bits
    fns["PosterizeIncreasing"] = posterize_keeping_zero_bits  # DeiT's 0-bit black, as the worker transform patches it
    kw = dict(resample=Image.BICUBIC, fillcolor=D.IMG_MEAN_FILL)
    want = []
    for i, a in enumerate(arr):
        img = Image.fromarray(a)
        for layer in range(2):
            if d["apply"][i, layer]:
                name = D.RAND_AUGMENT_OPS[d["op"][i, layer]]
                args = D.op_args(name, d["magnitude"][i:i + 1, layer], d["negate"][i:i + 1, layer])
                img = fns[name](img, *([] if args is None else [args.item()]), **kw)
        want.append(np.asarray(img))
    assert np.array_equal(_ours(D.rand_augment(x, d)), np.stack(want))


@pytest.mark.parametrize("name", sorted(D.OPS))
def test_every_op_keeps_to_the_batchs_device(name):
    """Arguments given on the CPU, the batch elsewhere (the meta device stands in for a GPU here): every tensor an op
    makes follows the batch, so a GPU batch never meets a CPU constant."""
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8, device="meta")
    args = D.op_args(name, torch.tensor([9.0, 3.0]), torch.tensor([True, False]))
    out = D.OPS[name](x) if args is None else D.OPS[name](x, args)
    assert out.device.type == "meta" and out.shape == x.shape and out.dtype == torch.uint8
