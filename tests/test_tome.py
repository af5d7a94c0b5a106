"""Token merging in the teacher: r=0 is the plain forward, merging conserves mass, MACs match the counter."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import maskedkd as mkd
from maskedkd.tome import bipartite_merge, tome_forward, tome_macs

CFG = mkd.ViTConfig(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=3, num_heads=2)


def _params(cfg, seed=0):
    p = mkd.init_params(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 9)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in p.items()}


@pytest.mark.parametrize("cfg", [CFG, CFG.replace(num_prefix_tokens=2, head="token_dist"),
                                 CFG.replace(pos_embed_prefix=False, layer_scale=0.3)])
def test_r0_is_the_plain_forward(cfg):
    p, x = _params(cfg), torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(tome_forward(p, x, cfg, 0), mkd.forward(p, x, cfg), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tome_forward(p, x, cfg, 3), mkd.forward(p, x, cfg), atol=1e-3)


@given(seed=st.integers(0, 1000), n=st.integers(2, 20), r=st.integers(0, 12), npre=st.integers(1, 2))
def test_merge_conserves_size_and_mass_and_keeps_prefix(seed, n, r, npre):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, npre + n, 4, generator=g)
    size = torch.randint(1, 4, (2, npre + n, 1), generator=g).float()
    out, s = bipartite_merge(x, size, torch.randn(2, npre + n, 3, generator=g), r, npre)
    assert out.shape[1] == npre + n - min(r, n // 2)
    torch.testing.assert_close(s.sum(1), size.sum(1))
    torch.testing.assert_close((out * s).sum(1), (x * size).sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, :npre], x[:, :npre])


def test_identical_tokens_merge_first():
    x = torch.randn(1, 1 + 6, 4)
    x[0, 3] = x[0, 2]  # patch tokens 1 and 2 (sets A and B) identical
    metric = x.clone()
    out, s = bipartite_merge(x, torch.ones(1, 7, 1), metric, 1, 1)
    assert s.max() == 2 and torch.allclose(out[0, (s[0, :, 0] == 2)], x[0, 2:3])


@pytest.mark.parametrize("r", [0, 2, 5])
def test_macs_model(r):
    p, x = _params(CFG), torch.randn(2, 3, 16, 16)
    assert tome_macs(CFG, 0) == mkd.macs(CFG)
    with torch.no_grad():
        counted = mkd.counted_macs(tome_forward, p, x, CFG, r)
    n, match = CFG.num_patches, 0
    for _ in range(CFG.depth):  # the bipartite similarity einsum, which the model leaves out
        if min(r, n // 2) > 0:
            match += math.ceil(n / 2) * (n // 2) * CFG.head_dim
        n -= min(r, n // 2)
    assert counted == 2 * (tome_macs(CFG, r) + match)
    assert tome_macs(CFG, 5) < tome_macs(CFG, 2) < tome_macs(CFG, 0)
