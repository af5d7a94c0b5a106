"""Parity with timm 1.0: same weights (through a saved file and load_checkpoint) -> same logits and scores."""
import pytest
import torch
from helpers import assert_entry_points_equal, timm_cfg, timm_model

import maskedkd as mkd

CLIP_SMALL = {"img_size": 32, "patch_size": 4, "num_classes": 10, "depth": 2, "embed_dim": 64, "num_heads": 4}
CASES = [
    ("deit_tiny_patch16_224", {}),
    ("deit_small_distilled_patch16_224", {"depth": 3}),
    ("deit3_small_patch16_224", {"depth": 3}),
    ("deit3_huge_patch14_224", {"depth": 2}),
    ("deit_tiny_patch16_224", {"img_size": 32, "patch_size": 4, "num_classes": 10, "depth": 4}),
    ("vit_base_patch16_clip_224", CLIP_SMALL),  # norm_pre, no patch-embed bias, LayerNorm eps 1e-5
    ("vit_base_patch16_clip_quickgelu_224", CLIP_SMALL),  # and QuickGELU
]


def _input(cfg, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, cfg.in_chans, *cfg.img_size, generator=g)


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{k}" for n, k in CASES])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_logits_match_timm(name, kw, fmt, tmp_path):
    ref = timm_model(name, **kw)
    cfg = timm_cfg(name, **kw)
    path = tmp_path / f"w.{fmt}"
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if fmt == "pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file
        save_file(sd, str(path))
    params = mkd.load_checkpoint(path, cfg)
    assert_entry_points_equal(ref, params, _input(cfg), cfg)


def _timm_last_attention(model, x):
    """timm's materialised last-block attention (b h n n): unfused attention, captured at attn_drop's input."""
    attn_mod = model.blocks[-1].attn
    attn_mod.fused_attn = False
    seen = {}
    hook = attn_mod.attn_drop.register_forward_hook(lambda m, inp, out: seen.setdefault("a", inp[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen["a"]


@pytest.mark.parametrize("name,kw", [
    ("deit_tiny_patch16_224", {"depth": 3}),                      # 1 prefix token
    ("deit_tiny_distilled_patch16_224", {"depth": 3}),            # 2 prefix tokens
    ("deit3_small_patch16_224", {"depth": 2}),
    ("vit_base_patch16_clip_quickgelu_224", CLIP_SMALL),
])
def test_scores_equal_official_formula_on_timm_attention(name, kw):
    ref = timm_model(name, **kw)
    cfg = timm_cfg(name, **kw)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    x = _input(cfg, b=3, seed=1)
    attn = _timm_last_attention(ref, x)
    assert attn.shape == (3, cfg.num_heads, cfg.num_patches + cfg.num_prefix_tokens,
                          cfg.num_patches + cfg.num_prefix_tokens)
    want = attn.mean(dim=1)[:, 0, cfg.num_prefix_tokens:]  # the official MaskedKD line
    with torch.no_grad():
        _, scores = mkd.student_forward(params, x, cfg)
    assert scores.dtype == torch.float32 and scores.shape == (3, cfg.num_patches)
    torch.testing.assert_close(scores, want, atol=1e-6, rtol=1e-5)
    # and so the same patches are picked
    k = mkd.keep_count(cfg.num_patches, 0.5)
    assert torch.equal(mkd.select_tokens(scores, k).sort(-1).values,
                       torch.topk(want, k).indices.sort(-1).values)


def _timm_masked_forward(model, x, keep_idx):
    """A hand-written masked teacher on timm's own modules: embed, add position, keep prefix + chosen patches
    (a Python loop over samples, deliberately unlike the library's gather), then norm_pre (CLIP; timm's order:
    after the patch dropout, where ours runs it before the gather), blocks, norm, head."""
    with torch.no_grad():
        tokens = model._pos_embed(model.patch_embed(x))  # b (np + n) d, position embedding added
        npre = model.num_prefix_tokens
        rows = [torch.cat([tokens[i, :npre], tokens[i, npre + keep_idx[i]]], 0) for i in range(x.shape[0])]
        t = model.norm(model.blocks(model.norm_pre(torch.stack(rows))))
        return model.forward_head(t)


@pytest.mark.parametrize("name,kw", [
    ("deit_tiny_patch16_224", {"depth": 2}),
    ("deit_tiny_distilled_patch16_224", {"depth": 2}),
    ("deit3_small_patch16_224", {"depth": 2}),
    ("vit_base_patch16_clip_224", CLIP_SMALL),
    ("vit_base_patch16_clip_quickgelu_224", CLIP_SMALL),
])
def test_masked_teacher_equals_hand_written(name, kw):
    ref = timm_model(name, **kw)
    cfg = timm_cfg(name, **kw)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    x = _input(cfg, b=3, seed=2)
    g = torch.Generator().manual_seed(0)
    keep = torch.stack([torch.randperm(cfg.num_patches, generator=g)[:50] for _ in range(3)])
    with torch.no_grad():
        got = mkd.teacher_forward(params, x, cfg, keep)
        full = mkd.teacher_forward(params, x, cfg)
    want = _timm_masked_forward(ref, x, keep)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - full).abs().max() > 1e-3  # masking changes the teacher's output
