"""Register tokens (Darcet et al., ICLR 2024; timm's reg_tokens): the same weights in timm and here give the same
logits, the same CLS scores over the patches (register columns dropped, as every prefix column is) and the same
masked teacher, for a ViT whose position embedding covers its prefix tokens and for DINOv2's, which does not."""
import pytest
import torch
from helpers import assert_entry_points_equal, timm_model
from test_parity_timm import _input, _timm_last_attention, _timm_masked_forward

import maskedkd as mkd

SMALL = {"img_size": 32, "patch_size": 4, "num_classes": 10, "depth": 2, "embed_dim": 64, "num_heads": 4}
CASES = [("vit_tiny_patch16_224", {**SMALL, "reg_tokens": 2}),                 # registers under pos_embed
         ("vit_small_patch14_reg4_dinov2", {**SMALL, "patch_size": 8, "num_classes": 10})]  # no_embed_class, LayerScale


@pytest.mark.parametrize("name,kw", CASES, ids=[c[0] for c in CASES])
def test_registers_match_timm(name, kw):
    ref = timm_model(name, **kw)
    cfg = mkd.config_from_timm(ref)
    assert cfg.reg_tokens == ref.num_reg_tokens > 0 and cfg.num_prefix_tokens == ref.num_prefix_tokens
    assert cfg.class_tokens == 1 and cfg.pos_embed_prefix == (not ref.no_embed_class)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    assert params["reg_token"].shape == (1, cfg.reg_tokens, cfg.embed_dim)
    x = _input(cfg, b=3, seed=1)
    scores = assert_entry_points_equal(ref, params, x, cfg)
    want = _timm_last_attention(ref, x).mean(dim=1)[:, 0, cfg.num_prefix_tokens:]  # the official line
    torch.testing.assert_close(scores, want, atol=1e-6, rtol=1e-5)
    g = torch.Generator().manual_seed(0)
    keep = torch.stack([torch.randperm(cfg.num_patches, generator=g)[:cfg.num_patches // 2] for _ in range(3)])
    with torch.no_grad():
        got = mkd.teacher_forward(params, x, cfg, keep)  # every prefix token (CLS and the registers) kept
    torch.testing.assert_close(got, _timm_masked_forward(ref, x, keep), atol=1e-5, rtol=1e-5)


def test_fresh_registers_are_initialised_as_timm_does_and_never_read_by_the_head():
    cfg = mkd.vit_config("deit_tiny_patch16_224", **{k: v for k, v in SMALL.items() if k != "reg_tokens"}).replace(
        reg_tokens=3, num_prefix_tokens=4)
    p = mkd.init_params(cfg, seed=0)
    assert p["reg_token"].shape == (1, 3, 64) and 0 < p["reg_token"].std() < 1e-5  # timm: normal, std 1e-6
    assert "dist_token" not in p and p["pos_embed"].shape[1] == cfg.num_patches + 4
    x = _input(cfg)
    with torch.no_grad():
        logits, scores = mkd.student_forward(p, x, cfg)
    assert scores.shape == (2, cfg.num_patches) and scores.sum(-1).max() < 1  # CLS and register columns dropped


@pytest.mark.parametrize("kw,match", [
    ({"reg_tokens": 2}, "must be 1 or 2"),                                      # registers not counted as prefix
    ({"reg_tokens": -1, "num_prefix_tokens": 0}, r"reg_tokens must be in \[0, 16\], got -1"),
    ({"reg_tokens": 2, "num_prefix_tokens": 3, "head": "token_dist"}, "needs two class tokens"),
])
def test_register_counts_that_do_not_add_up_are_refused_naming_them(kw, match):
    with pytest.raises(ValueError, match=match):
        mkd.vit_config("deit_tiny_patch16_224").replace(**kw)
