"""Presets, overrides and config validation."""
import pytest

import maskedkd as mkd


def test_presets_match_timm_sizes():
    import timm
    for name in mkd.PRESETS:
        ref = timm.create_model(name, pretrained=False, depth=1)
        cfg = mkd.vit_config(name, depth=1)
        assert (cfg.embed_dim, cfg.num_heads, cfg.num_patches, cfg.num_prefix_tokens) == (
            ref.embed_dim, ref.blocks[0].attn.num_heads, ref.patch_embed.num_patches, ref.num_prefix_tokens)
        assert set(mkd.param_shapes(cfg)) == set(ref.state_dict()), name
        assert all(tuple(v.shape) == mkd.param_shapes(cfg)[k] for k, v in ref.state_dict().items()), name


def test_overrides():
    c = mkd.vit_config("deit3_huge_patch14_224", depth=2)
    assert (c.depth, c.embed_dim, c.patch_size, c.grid_size) == (2, 1280, 14, (16, 16))
    c = mkd.vit_config("deit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10)
    assert c.num_patches == 64 and c.num_classes == 10


def test_unknown_names_listed():
    with pytest.raises(ValueError, match="unknown preset 'vit_giant'.*deit_base_patch16_224"):
        mkd.vit_config("vit_giant")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['dropout'\].*img_size"):
        mkd.vit_config("deit_tiny_patch16_224", dropout=0.1)


@pytest.mark.parametrize("kw,msg", [
    ({"img_size": 30, "patch_size": 4}, "image height 30 is not divisible by patch_size 4"),
    ({"embed_dim": 100, "num_heads": 3}, "embed_dim=100 is not divisible by num_heads=3"),
    ({"depth": 0}, "depth must be >= 1"),
])
def test_invalid_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        mkd.vit_config("deit_tiny_patch16_224", **kw)
