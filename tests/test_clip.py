"""The CLIP ViT-B/16 image towers of timm 1.0.31 (vit_base_patch16_clip_224, ..._quickgelu_224): what sets them apart
from a DeiT (norm_pre, no patch-embed bias, LayerNorm eps 1e-5, QuickGELU), each shown to matter at the parity
tolerance; the logits parity itself is in test_parity_timm.py."""
import pytest
import torch
from helpers import timm_model

import maskedkd as mkd
from reproduce.lib import paper

KW = {"img_size": 32, "patch_size": 4, "num_classes": 10, "depth": 2, "embed_dim": 64, "num_heads": 4}


def _x(b=2, seed=0):
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_presets_follow_timm_model_definitions():
    import timm
    for name, act in (("vit_base_patch16_clip_224", "gelu"), ("vit_base_patch16_clip_quickgelu_224", "quick_gelu")):
        cfg = mkd.vit_config(name)
        ref = timm.create_model(name, pretrained=False, depth=1)
        assert (cfg.pre_norm, cfg.act, cfg.norm_eps, cfg.num_classes) == (
            True, act, ref.norm_pre.eps, ref.num_classes)
        assert ref.patch_embed.proj.bias is None and "patch_embed.proj.bias" not in mkd.param_shapes(cfg)
        assert ref.global_pool == "token" and isinstance(ref.fc_norm, torch.nn.Identity)  # CLS, final norm
        assert type(ref.blocks[0].mlp.act).__name__ == {"gelu": "GELU", "quick_gelu": "QuickGELU"}[act]
    # the paper's CLIP-B/16 teacher: ImageNet classes, the same MACs as DeiT-B (norm_pre and biases are not counted)
    t = paper.teacher_config("CLIP-B/16")
    assert t.name == "vit_base_patch16_clip_224" and t.num_classes == 1000
    deit_b = mkd.vit_config("deit_base_patch16_224")
    for k in (None, 144, 98):
        assert mkd.macs(t, k) == mkd.macs(deit_b, k)


@pytest.mark.parametrize("name", ["vit_base_patch16_clip_224", "vit_base_patch16_clip_quickgelu_224"])
def test_each_clip_difference_matters(name):
    """Parity holds at 1e-5, and dropping any one CLIP difference (norm_pre, its eps, QuickGELU) breaks it by far
    more, so the parity test checks each of them."""
    ref = timm_model(name, **KW)
    cfg = mkd.vit_config(name, **KW)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    x = _x()
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(mkd.forward(params, x, cfg), want, atol=1e-5, rtol=1e-5)
        other_act = "gelu" if cfg.act == "quick_gelu" else "quick_gelu"
        no_pre = {k: v for k, v in params.items() if not k.startswith("norm_pre")}
        no_pre["patch_embed.proj.bias"] = torch.zeros(cfg.embed_dim)
        for wrong, p in ((cfg.replace(act=other_act), params), (cfg.replace(norm_eps=1e-6), params),
                         (cfg.replace(pre_norm=False), no_pre)):
            assert (mkd.forward(p, x, wrong) - want).abs().max() > 1e-4, wrong


def test_init_params_match_timm_and_load_rejects_a_deit_file():
    cfg = mkd.vit_config("vit_base_patch16_clip_224", **KW)
    ref = timm_model("vit_base_patch16_clip_224", **KW)
    p = mkd.init_params(cfg)
    assert {k: tuple(v.shape) for k, v in p.items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert torch.all(p["norm_pre.weight"] == 1) and torch.all(p["norm_pre.bias"] == 0)
    deit = mkd.init_params(mkd.vit_config("deit_base_patch16_224", **KW))
    with pytest.raises(ValueError, match=r"missing keys \['norm_pre.bias', 'norm_pre.weight'\].*"
                                         r"unexpected keys \['patch_embed.proj.bias'\]"):
        mkd.load_checkpoint(deit, cfg)


def test_quick_gelu_formula():
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(mkd.attention.quick_gelu(x), x * torch.sigmoid(1.702 * x))
    from timm.layers import QuickGELU
    torch.testing.assert_close(mkd.attention.quick_gelu(x), QuickGELU()(x))
