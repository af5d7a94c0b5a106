"""kd_loss: definition, invariants (hypothesis) and bad input."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import maskedkd as mkd


@st.composite
def logits(draw, same=False):
    b, c = draw(st.integers(1, 6)), draw(st.integers(2, 20))
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.floats(0.1, 10.0))
    return torch.randn(b, c, generator=g) * scale, torch.randn(b, c, generator=g) * scale


def test_matches_the_written_out_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    y = torch.randint(0, 10, (5,), generator=g)
    T, a = 2.0, 0.3
    pt = F.softmax(t / T, -1)
    kl = (pt * (pt.log() - F.log_softmax(s / T, -1))).sum() / 5
    want = (1 - a) * F.cross_entropy(s, y) + a * T * T * kl
    torch.testing.assert_close(mkd.kd_loss(s, t, y, kd_weight=a, temperature=T), want)
    # the defaults are the official ones: 0.5, T = 1, soft, batchmean
    pt1 = F.softmax(t, -1)
    want1 = 0.5 * F.cross_entropy(s, y) + 0.5 * (pt1 * (pt1.log() - F.log_softmax(s, -1))).sum() / 5
    torch.testing.assert_close(mkd.kd_loss(s, t, y), want1)


@given(st_=logits(), T=st.floats(0.5, 8.0))
def test_kl_nonnegative_and_zero_when_distributions_match(st_, T):
    s, t = st_
    assert mkd.kd_divergence(s, t, temperature=T) >= -1e-6
    shift = torch.randn(s.shape[0], 1)  # adding a per-row constant does not change the distribution
    assert abs(float(mkd.kd_divergence(s, s + shift, temperature=T))) < 1e-5


@given(st_=logits(), T=st.floats(0.5, 8.0))
def test_temperature_squared_scaling(st_, T):
    s, t = st_
    a = mkd.kd_divergence(s, t, temperature=T)
    b = mkd.kd_divergence(s / T, t / T, temperature=1.0)
    torch.testing.assert_close(a, T * T * b, rtol=1e-4, atol=1e-6)


@given(st_=logits())
def test_deit_reduction_is_batchmean_over_classes(st_):
    s, t = st_
    bm = mkd.kd_divergence(s, t, kl_reduction="batchmean")
    deit = mkd.kd_divergence(s, t, kl_reduction="deit")
    torch.testing.assert_close(bm, deit * s.shape[1], rtol=1e-5, atol=1e-7)


@given(st_=logits(), w=st.floats(0.0, 1.0))
def test_loss_is_convex_mix_of_parts(st_, w):
    s, t = st_
    y = torch.zeros(s.shape[0], dtype=torch.long)
    terms = mkd.kd_loss_terms(s, t, y, kd_weight=w)
    torch.testing.assert_close(terms["loss"], (1 - w) * terms["ce"] + w * terms["kd"])
    assert terms["loss"] >= 0


def test_soft_targets_and_hard_kind():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    y = torch.tensor([0, 5, 2, 2])
    onehot = F.one_hot(y, 6).float()
    torch.testing.assert_close(mkd.kd_loss(s, t, onehot), mkd.kd_loss(s, t, y))
    hard = mkd.kd_loss(s, t, y, kind="hard")
    torch.testing.assert_close(hard, 0.5 * F.cross_entropy(s, y) + 0.5 * F.cross_entropy(s, t.argmax(-1)))
    torch.testing.assert_close(mkd.kd_loss(s, None, y), F.cross_entropy(s, y))


@pytest.mark.parametrize("kw,msg", [
    ({"kind": "fuzzy"}, "kind='fuzzy'"), ({"kl_reduction": "mean"}, "kl_reduction='mean'"),
    ({"kd_weight": 1.5}, "kd_weight=1.5"), ({"temperature": 0.0}, "temperature"),
])
def test_bad_arguments(kw, msg):
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match=msg):
        mkd.kd_loss(s, s, torch.tensor([0, 1]), **kw)


def test_shape_mismatches_named():
    with pytest.raises(ValueError, match="teacher logits"):
        mkd.kd_loss(torch.randn(2, 3), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="soft targets shape"):
        mkd.kd_loss(torch.randn(2, 3), None, torch.rand(2, 4))


@given(seed=st.integers(0, 1000), b=st.integers(1, 4), k=st.integers(2, 10), ds=st.integers(2, 8),
       extra=st.integers(0, 8))
def test_manifold_loss_sees_only_relations(seed, b, k, ds, extra):
    """Zero when the teacher's features are the student's under an isometry into a wider space and per-token
    rescaling (relations of normalised features are equal); positive for unrelated features."""
    from maskedkd.losses import manifold_loss
    g = torch.Generator().manual_seed(seed)
    f_s = torch.randn(b, k, ds, generator=g)
    q, _ = torch.linalg.qr(torch.randn(ds + extra, ds + extra, generator=g))
    f_t = (f_s @ q[:ds]) * (torch.rand(b, k, 1, generator=g) + 0.5)   # (b k ds+extra), same relations
    assert float(manifold_loss(f_s, f_t)) < 1e-10
    assert float(manifold_loss(f_s, torch.randn(b, k, ds + extra, generator=g))) > 1e-4


@given(seed=st.integers(0, 1000), k=st.integers(2, 30))
def test_attention_loss_compares_distributions_on_kept_patches(seed, k):
    from maskedkd.losses import attention_loss
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(3, k, generator=g) + 1e-3
    assert abs(float(attention_loss(a, 7.0 * a))) < 1e-6  # renormalised: only the shape over kept patches counts
    b = torch.rand(3, k, generator=g) + 1e-3
    assert float(attention_loss(a, b)) >= -1e-7
