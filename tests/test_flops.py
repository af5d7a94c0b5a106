"""The MACs model against the paper's numbers [docs/paper.md#flops-model] and against torch's FlopCounterMode."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import maskedkd as mkd

# (preset, kept patches or None, GMAC/img from docs/paper.md#flops-model)
PAPER_GMACS = [
    ("deit_tiny_patch16_224", None, 1.254),
    ("deit_small_patch16_224", None, 4.599),
    ("deit_small_patch16_224", 144, 3.331),
    ("deit_small_patch16_224", 98, 2.251),
    ("deit_small_patch16_224", 80, 1.839),
    ("deit_small_patch16_224", 49, 1.143),
    ("deit_base_patch16_224", None, 17.564),
    ("deit_base_patch16_224", 144, 12.819),
    ("deit_base_patch16_224", 98, 8.706),
    ("deit_base_patch16_224", 49, 4.409),
    ("deit3_large_patch16_224", None, 61.555),
    ("deit3_large_patch16_224", 144, 44.977),
    ("deit3_large_patch16_224", 98, 30.534),
    ("deit3_huge_patch14_224", None, 167.295),
    ("deit3_huge_patch14_224", 192, 124.670),
    ("deit3_huge_patch14_224", 128, 82.717),
    ("cait_s24_224", None, 9.327), ("cait_s24_224", 144, 6.708), ("cait_s24_224", 98, 4.488),
    ("vit_base_patch16_clip_224", None, 17.564), ("vit_base_patch16_clip_224", 98, 8.706),
]


@pytest.mark.parametrize("name,k,gmac", PAPER_GMACS)
def test_macs_match_the_flops_model_table(name, k, gmac):
    assert mkd.macs(mkd.vit_config(name), k) / 1e9 == pytest.approx(gmac, rel=1e-3)


# (teacher, epochs, kept, paper PFLOPs) from the main table [docs/paper.md#flops-model]
PAPER_PFLOPS = [
    ("deit_small_patch16_224", 300, None, 1770), ("deit_small_patch16_224", 300, 144, 1282),
    ("deit_small_patch16_224", 300, 98, 866), ("deit_small_patch16_224", 300, 80, 707),
    ("deit_small_patch16_224", 300, 49, 439),
    ("deit_base_patch16_224", 300, None, 6757), ("deit_base_patch16_224", 300, 144, 4932),
    ("deit_base_patch16_224", 300, 98, 3349), ("deit_base_patch16_224", 300, 49, 1696),
    ("deit3_large_patch16_224", 300, None, 23677), ("deit3_large_patch16_224", 300, 144, 17301),
    ("deit3_large_patch16_224", 300, 98, 11744),
    ("deit3_huge_patch14_224", 50, None, 10723), ("deit3_huge_patch14_224", 50, 192, 7991),
    ("deit3_huge_patch14_224", 50, 128, 5301),
    ("deit_base_patch16_224", 200, None, 4505), ("deit_base_patch16_224", 200, 144, 3287),  # MAE-ViT-B, G2SD
    ("cait_s24_224", 300, None, 3591), ("cait_s24_224", 300, 144, 2583), ("cait_s24_224", 300, 98, 1728),
    ("vit_base_patch16_clip_224", 300, 144, 4932), ("vit_base_patch16_clip_224", 300, 98, 3349),  # CLIP-B/16
]


@pytest.mark.parametrize("name,epochs,k,paper", PAPER_PFLOPS)
def test_pflops_column_within_0_3_percent(name, epochs, k, paper):
    assert mkd.pflops(mkd.macs(mkd.vit_config(name), k), epochs) == pytest.approx(paper, rel=3e-3)


def test_training_ledger_gives_the_28_percent():
    """v1's "~28% of overall training FLOPs" at 50% kept: 0.281 (DeiT-S -> Ti), 0.282 (DeiT-B -> S)
    [docs/paper.md#flops-model]."""
    v = mkd.vit_config
    a = mkd.training_ledger(v("deit_tiny_patch16_224"), v("deit_small_patch16_224"), 98)
    b = mkd.training_ledger(v("deit_small_patch16_224"), v("deit_base_patch16_224"), 98)
    assert a["total_saving"] == pytest.approx(0.281, abs=1e-3)
    assert b["total_saving"] == pytest.approx(0.282, abs=1e-3)
    assert a["teacher_saving"] == pytest.approx(1 - 2.251 / 4.599, abs=1e-3)
    assert a["student_fwd_bwd"] == 3 * a["student_fwd"]


SMALL = [
    mkd.ViTConfig(img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=2, num_heads=2),
    mkd.ViTConfig(img_size=32, patch_size=8, num_classes=5, embed_dim=48, depth=3, num_heads=3,
                  num_prefix_tokens=2, head="token_dist", mlp_ratio=2.0),
    mkd.ViTConfig(img_size=(16, 24), patch_size=4, num_classes=3, embed_dim=32, depth=1, num_heads=4,
                  pos_embed_prefix=False, layer_scale=0.1),
]


@pytest.mark.parametrize("cfg", SMALL, ids=["deit", "distilled", "deit3"])
@pytest.mark.parametrize("keep", [None, 1, 7, "all"])
def test_macs_equal_flop_counter(cfg, keep):
    params = mkd.init_params(cfg)
    b = 3
    x = torch.randn(b, cfg.in_chans, *cfg.img_size)
    k = cfg.num_patches if keep == "all" else keep
    idx = None if k is None else torch.stack([torch.randperm(cfg.num_patches)[:k] for _ in range(b)])
    with torch.no_grad():
        counted = mkd.flops.counted_macs(mkd.teacher_forward, params, x, cfg, idx)
    assert counted == b * mkd.macs(cfg, k)


@given(cfg_i=st.integers(0, len(SMALL) - 1))
def test_macs_increasing_and_quadratic_in_num_keep(cfg_i):
    cfg = SMALL[cfg_i]
    ks = list(range(1, cfg.num_patches + 1))
    m = [mkd.macs(cfg, k) for k in ks]
    assert all(b > a for a, b in zip(m, m[1:]))
    # a + b n + c n^2: constant second difference 4 L D (from the 2 n^2 D attention term per block)
    second = {m[i + 2] - 2 * m[i + 1] + m[i] for i in range(len(m) - 2)}
    assert second == {4 * cfg.depth * cfg.embed_dim}


def test_macs_rejects_bad_keep():
    cfg = SMALL[0]
    for k in (0, cfg.num_patches + 1):
        with pytest.raises(ValueError, match=f"num_keep={k}"):
            mkd.macs(cfg, k)
