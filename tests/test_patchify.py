"""patchify equals the strided Conv2d patch embedding, for plain and overlapping (AST) grids."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import given
from hypothesis import strategies as st

import maskedkd as mkd


@given(p=st.sampled_from([2, 4, 8]), gh=st.integers(1, 5), gw=st.integers(1, 5), c=st.integers(1, 3),
       seed=st.integers(0, 1000))
def test_patch_embed_equals_conv(p, gh, gw, c, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, gh * p, gw * p, generator=g)
    w, b = torch.randn(8, c, p, p, generator=g), torch.randn(8, generator=g)
    want = rearrange(F.conv2d(x, w, b, stride=p), "b d gh gw -> b (gh gw) d")
    got = F.linear(mkd.patchify(x, p), rearrange(w, "d c p1 p2 -> d (c p1 p2)"), b)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size,stride", [((128, 100), (10, 10)), ((40, 33), (10, 7)), ((16, 16), (16, 16))])
def test_overlapping_patches_equal_conv(size, stride):
    x = torch.randn(2, 1, *size)
    w, b = torch.randn(12, 1, 16, 16), torch.randn(12)
    want = rearrange(F.conv2d(x, w, b, stride=stride), "b d gh gw -> b (gh gw) d")
    got = F.linear(mkd.patchify(x, 16, stride), rearrange(w, "d c p1 p2 -> d (c p1 p2)"), b)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_patch_order_is_raster_and_channel_major():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    p = mkd.patchify(x, 2)
    assert p.shape == (1, 4, 8)
    assert p[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]  # patch (0, 1): channel 0 then channel 1


def test_bad_sizes():
    with pytest.raises(ValueError, match=r"\(30, 32\) is not divisible by patch size 4"):
        mkd.patchify(torch.randn(1, 3, 30, 32), 4)
    with pytest.raises(ValueError, match="smaller than one patch"):
        mkd.patchify(torch.randn(1, 1, 8, 40), 16, (10, 10))
