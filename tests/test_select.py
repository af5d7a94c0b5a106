"""Selection invariants (hypothesis), keep counts, criteria registry and grid resampling."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import maskedkd as mkd


@st.composite
def scores_and_k(draw):
    b, n = draw(st.integers(1, 4)), draw(st.integers(1, 64))
    # few distinct values so ties are common
    vals = draw(arrays(np.float32, (b, n), elements=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 0.3])))
    return torch.from_numpy(vals), draw(st.integers(1, n))


@pytest.mark.parametrize("criterion", ["topk", "bottomk", "random"])
@given(sk=scores_and_k(), seed=st.integers(0, 1000))
def test_indices_unique_in_range_count_k(criterion, sk, seed):
    scores, k = sk
    idx = mkd.select_tokens(scores, k, criterion, generator=torch.Generator().manual_seed(seed))
    assert idx.dtype == torch.int64 and idx.shape == (scores.shape[0], k)
    assert int(idx.min()) >= 0 and int(idx.max()) < scores.shape[1]
    for row in idx:
        assert len(set(row.tolist())) == k


@given(sk=scores_and_k())
def test_topk_kept_scores_dominate_dropped(sk):
    scores, k = sk
    idx = mkd.select_tokens(scores, k)
    for s, row in zip(scores, idx):
        kept = torch.zeros_like(s, dtype=torch.bool)
        kept[row] = True
        if (~kept).any():
            assert s[kept].min() >= s[~kept].max()


@given(sk=scores_and_k())
def test_bottomk_kept_scores_below_dropped(sk):
    scores, k = sk
    idx = mkd.select_tokens(scores, k, "bottomk")
    for s, row in zip(scores, idx):
        kept = torch.zeros_like(s, dtype=torch.bool)
        kept[row] = True
        if (~kept).any():
            assert s[kept].max() <= s[~kept].min()


def test_random_is_seeded_and_covers_all_patches():
    s = torch.zeros(2000, 10)
    a = mkd.select_tokens(s, 3, "random", torch.Generator().manual_seed(0))
    b = mkd.select_tokens(s, 3, "random", torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    counts = torch.bincount(a.flatten(), minlength=10).float()
    assert counts.min() > 0.8 * counts.mean()  # roughly uniform over patches


def test_registry_accepts_new_criteria_and_rejects_unknown():
    @mkd.register_criterion("first_k_test")
    def first(scores, k, generator=None):
        return torch.arange(k).expand(scores.shape[0], k)
    try:
        assert mkd.select_tokens(torch.rand(2, 5), 2, "first_k_test").tolist() == [[0, 1], [0, 1]]
    finally:
        mkd.CRITERIA.pop("first_k_test")
    with pytest.raises(ValueError, match="unknown criterion 'nope'"):
        mkd.select_tokens(torch.rand(2, 5), 2, "nope")


@pytest.mark.parametrize("k", [0, 6, -1, 2.5, True])
def test_num_keep_out_of_range(k):
    with pytest.raises(ValueError, match="num_keep"):
        mkd.select_tokens(torch.rand(2, 5), k)


def test_keep_count_paper_labels():
    assert [mkd.keep_count(196, r) for r in (0.75, 0.5, 0.4, 0.25)] == [144, 98, 80, 49]
    assert [mkd.keep_count(256, r) for r in (0.75, 0.5)] == [192, 128]
    assert mkd.keep_count(196, 0.75, convention="exact") == 147
    assert mkd.keep_count(64, 0.5) == 32 and mkd.keep_count(10, 0.06) == 1 and mkd.keep_count(9, 1.0) == 9
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="keep ratio"):
            mkd.keep_count(196, bad)


def test_keep_schedule_uses_the_paper_counts_of_keep_count():
    """The bug this guards: keep_ratio=0.75 kept 144 of 196 (the paper's count) while keep_schedule "75" kept 147:
    every schedule phase and linear step goes through keep_count."""
    assert mkd.keep_schedule("100*1,75", 196, 3) == (None, 144, 144)
    assert mkd.keep_schedule("50*2,25", 196, 3) == (98, 98, 49)
    assert mkd.keep_schedule("75:50", 196, 2) == (144, 98)
    assert mkd.keep_schedule("75:50", 256, 2) == (192, 128)


def test_plugin_criterion_by_module_name(tmp_path, monkeypatch):
    """A criterion named "module:name" imports the module that registers it (how a subprocess finds it)."""
    (tmp_path / "my_crit_mod.py").write_text(
        "import torch\nfrom maskedkd.select import register_criterion\n"
        "@register_criterion('first')\ndef first(scores, k, generator=None):\n"
        "    return torch.arange(k).expand(scores.shape[0], k)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    idx = mkd.select_tokens(torch.rand(2, 9), 3, "my_crit_mod:first")
    assert idx.tolist() == [[0, 1, 2], [0, 1, 2]]
    with pytest.raises(ValueError, match="cannot import module 'no_such_mod'"):
        mkd.select_tokens(torch.rand(2, 9), 3, "no_such_mod:first")
    # a plug-in that reads the pixel spread keeps that need under its module name: the view computes the spread
    (tmp_path / "my_spread_mod.py").write_text(
        "import torch\nfrom maskedkd.select import register_criterion\n"
        "@register_criterion('flattest', uses_spread=True)\ndef flattest(scores, k, generator=None, *, spread):\n"
        "    return torch.topk(-spread, k, dim=-1).indices\n")
    cfg = mkd.ViTConfig(img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=1, num_heads=2)
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4, :] = torch.randn(1, 1, 4, 8)  # the top row of patches has content, the bottom row is flat
    view = mkd.TeacherView(cfg, mkd.init_params(cfg), 2, criterion="my_spread_mod:flattest")
    assert sorted(view.select(x, torch.rand(1, 4))[0][0].tolist()) == [2, 3]


def test_resample_scores_maps_regions_onto_the_teacher_grid():
    """A student score map (14x14) that is high in the top-left quadrant picks top-left teacher patches (16x16)."""
    m = torch.zeros(1, 14, 14)
    m[:, :7, :7] = 1.0
    s = m.flatten(1)
    t = mkd.resample_scores(s, (14, 14), (16, 16))
    assert t.shape == (1, 256)
    idx = mkd.select_tokens(t, 64)[0]
    rows, cols = idx // 16, idx % 16
    assert rows.max() < 8 and cols.max() < 8
    assert torch.equal(mkd.resample_scores(s, (14, 14), (14, 14)), s)
    with pytest.raises(ValueError, match="source grid"):
        mkd.resample_scores(s, (16, 16), (14, 14))


def test_patch14_teacher_with_patch16_student_runs():
    """The paper's DeiT3-H/14 teacher row: 14x14 student scores -> 16x16 teacher grid, 128 of 256 kept."""
    s_cfg = mkd.vit_config("deit_tiny_patch16_224", depth=1)
    t_cfg = mkd.vit_config("deit3_huge_patch14_224", depth=1, embed_dim=64, num_heads=2)
    x = torch.randn(2, 3, 224, 224)
    _, scores = mkd.student_forward(mkd.init_params(s_cfg), x, s_cfg)
    t_scores = mkd.resample_scores(scores, s_cfg.grid_size, t_cfg.grid_size)
    keep = mkd.select_tokens(t_scores, mkd.keep_count(t_cfg.num_patches, 0.5))
    assert keep.shape == (2, 128)
    with torch.no_grad():
        out = mkd.teacher_forward(mkd.init_params(t_cfg), x, t_cfg, keep)
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


@given(seed=st.integers(0, 1000), n=st.integers(2, 40), mass=st.floats(0.05, 1.0))
def test_adaptive_budget_is_the_smallest_set_reaching_the_mass(seed, n, mass):
    from maskedkd.select import adaptive_budget
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(3, n, generator=g) + 1e-3
    idx, valid, count = adaptive_budget(s, mass, n)
    share = s / s.sum(-1, keepdim=True)
    for b in range(3):
        c = int(count[b])
        kept = share[b, idx[b, :c]].sum()
        assert kept >= mass - 1e-5 or c == n
        if c > 1:
            assert share[b, idx[b, :c - 1]].sum() < mass + 1e-6  # one fewer would not reach it
        assert valid[b].sum() == c and valid[b, :c].all()


def test_padded_budget_equals_running_each_sample_on_its_own_patches():
    from maskedkd.model import forward_tokens, head
    from maskedkd.select import adaptive_budget
    cfg = mkd.ViTConfig(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=2)
    p = {k: v + 0.05 * torch.randn(v.shape) for k, v in mkd.init_params(cfg).items()}
    x = torch.randn(3, 3, 16, 16)
    _, scores = mkd.student_forward(p, x, cfg)
    idx, valid, count = adaptive_budget(scores, 0.6, 12)
    tok, _ = forward_tokens(p, x, cfg, idx, keep_valid=valid)
    got = head(p, tok, cfg)
    for b in range(3):
        c = int(count[b])
        want = mkd.teacher_forward(p, x[b:b + 1], cfg, idx[b:b + 1, :c])
        torch.testing.assert_close(got[b:b + 1], want, atol=1e-5, rtol=1e-5)
    assert 1 <= int(count.min()) and int(count.max()) <= 12


def test_builtin_criteria_cannot_be_replaced_and_module_names_must_match():
    with pytest.raises(ValueError, match="'random' is built in"):
        mkd.register_criterion("random")(lambda scores, k, generator=None: scores[:, :k].long())
    with pytest.raises(ValueError, match="module 'maskedkd.patchify' registers no criterion 'topk'"):
        mkd.select_tokens(torch.rand(2, 9), 3, "maskedkd.patchify:topk")


@st.composite
def scores_spread_and_k(draw):
    scores, k = draw(scores_and_k())
    spread = draw(arrays(np.float32, tuple(scores.shape), elements=st.sampled_from([0.0, 0.01, 0.2, 1.0, 2.0])))
    return scores, torch.from_numpy(spread), k


def _max(t):
    return t.max().item() if t.numel() else -1.0


@given(ssk=scores_spread_and_k())
def test_flat_last_keeps_the_students_order_with_flat_patches_after_the_rest(ssk):
    scores, spread, k = ssk
    idx = mkd.select_tokens(scores, k, "topk_flat_last", spread=spread)
    flat = spread < mkd.select.FLAT_RATIO * spread.mean(-1, keepdim=True)
    for row, s, f in zip(idx, scores, flat):
        kept = torch.zeros_like(f).index_fill(0, row, True)
        assert len(set(row.tolist())) == k
        if (~f).sum() >= k:  # enough patches that are not flat: none of the flat ones is kept
            assert not (kept & f).any()
            assert s[kept].min() >= _max(s[~kept & ~f])  # topk among the patches that are not flat
        else:  # every patch that is not flat is kept, the flat ones by score
            assert kept[~f].all() and s[kept & f].min() >= _max(s[~kept])


def test_flat_last_is_topk_when_no_patch_is_flat_and_needs_the_spread():
    scores = torch.rand(3, 16, generator=torch.Generator().manual_seed(0))
    same = torch.ones(3, 16)
    assert torch.equal(mkd.select_tokens(scores, 5, "topk_flat_last", spread=same).sort(-1).values,
                       mkd.select_tokens(scores, 5, "topk").sort(-1).values)
    with pytest.raises(ValueError, match="takes the patches' spread"):
        mkd.select_tokens(scores, 5, "topk_flat_last")
    with pytest.raises(ValueError, match="takes no spread"):
        mkd.select_tokens(scores, 5, "topk", spread=same)
    with pytest.raises(ValueError, match="spread of shape"):
        mkd.select_tokens(scores, 5, "topk_flat_last", spread=same[:, :8])


def test_teacher_view_ranks_flat_patches_last_from_the_pixels():
    cfg = mkd.ViTConfig(img_size=16, patch_size=4, in_chans=2, num_classes=3, embed_dim=16, depth=1, num_heads=2)
    x = torch.zeros(2, 2, 16, 16)
    x[:, :, :8] = torch.randn(2, 2, 8, 16, generator=torch.Generator().manual_seed(1))  # top half textured
    scores = torch.linspace(1, 0, 16).flip(0).expand(2, 16).contiguous()  # the student prefers the bottom rows
    view = mkd.TeacherView(cfg, mkd.init_params(cfg), 6, criterion="topk_flat_last")
    keep, _, _ = view.select(x, scores)
    assert (keep < 8).all()  # only textured patches (the top two rows of the 4x4 grid)
    assert set(keep[0].tolist()) == set(range(2, 8))  # and among them, the student's six best
    spread = mkd.select.patch_spread(mkd.patchify(x, 4), 2)
    assert (spread[:, 8:] == 0).all() and (spread[:, :8] > 0.5).all()


def test_bench_refuses_an_unknown_criterion_naming_it(capsys):
    from maskedkd import bench
    with pytest.raises(SystemExit):
        bench.main(["step", "--criterion", "nope"])
    assert "unknown criterion 'nope'" in capsys.readouterr().err
