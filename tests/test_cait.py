"""CaiT: parity with timm 1.0.31's cait.py (plain and masked teacher, scores), MACs against FlopCounterMode and the
paper's CaiT-S24 PFLOPs column, checkpoint names, config checks."""
import pytest
import torch

import maskedkd as mkd
from helpers import assert_entry_points_equal
from reproduce.lib import paper

SMALL = {"img_size": 32, "patch_size": 4, "num_classes": 10}  # 64 patches
CASES = [  # (timm name, our overrides): depth-reduced; class_attn_depth is timm's depth_token_only
    ("cait_s24_224", {"depth": 2, "class_attn_depth": 2, "embed_dim": 64, "num_heads": 4, **SMALL}),
    ("cait_xxs24_224", {"depth": 2, "class_attn_depth": 1, **SMALL}),
    ("cait_xxs36_224", {"depth": 1, "class_attn_depth": 2}),  # 224 px, 196 patches, 4 heads
]
IDS = [f"{n}-{k.get('depth')}-{k.get('class_attn_depth')}" for n, k in CASES]


def timm_cait(name, seed=0, **kw):
    """timm's CaiT at random init in eval mode, every parameter nudged and the layer scales (gamma_1, gamma_2:
    1e-5 at init) set to U(0.5, 1.5) so every block matters."""
    import timm
    kw = dict(kw)
    if "class_attn_depth" in kw:
        kw["depth_token_only"] = kw.pop("class_attn_depth")
    torch.manual_seed(seed)
    m = timm.create_model(name, pretrained=False, **kw).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if ".gamma_" in n:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return m


def _x(cfg, b=2, seed=0):
    return torch.randn(b, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(seed))


def _keep(cfg, b, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(cfg.num_patches, generator=g)[:k] for _ in range(b)])


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_logits_match_timm(name, kw, tmp_path):
    ref = timm_cait(name, **kw)
    cfg = mkd.vit_config(name, **kw)
    assert cfg.family == "cait" and cfg.layer_scale == 1e-5 and cfg.norm_eps == 1e-6
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    torch.save(sd, tmp_path / "w.pth")
    params = mkd.load_checkpoint(tmp_path / "w.pth", cfg)  # timm names, strict keys and shapes
    scores = assert_entry_points_equal(ref, params, _x(cfg), cfg)
    assert scores.shape == (2, cfg.num_patches) and scores.dtype == torch.float32


def _timm_masked_cait(model, x, keep_idx):
    """A hand-written masked CaiT teacher on timm's own modules, as the official MaskedKD cait.py: embed, add the
    position embedding to every patch, keep the chosen patches (a Python loop over samples), self-attention blocks
    on them alone, class-attention blocks of CLS over [CLS, kept], norm, head."""
    with torch.no_grad():
        t = model.patch_embed(x) + model.pos_embed
        kept = model.blocks(torch.stack([t[i, keep_idx[i]] for i in range(x.shape[0])]))
        cls = model.cls_token.expand(x.shape[0], -1, -1)
        for blk in model.blocks_token_only:
            cls = blk(kept, cls)
        return model.forward_head(model.norm(torch.cat([cls, kept], dim=1)))


@pytest.mark.parametrize("name,kw", CASES[:2], ids=IDS[:2])
def test_masked_teacher_equals_hand_written_timm(name, kw):
    ref = timm_cait(name, **kw)
    cfg = mkd.vit_config(name, **kw)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    x, keep = _x(cfg, b=3, seed=2), _keep(cfg, 3, 20)
    with torch.no_grad():
        got = mkd.teacher_forward(params, x, cfg, keep)
        full = mkd.teacher_forward(params, x, cfg)
    torch.testing.assert_close(got, _timm_masked_cait(ref, x, keep), atol=1e-5, rtol=1e-5)
    assert (got - full).abs().max() > 1e-3  # masking changes the teacher's output


def test_scores_equal_official_formula_on_timm_class_attention():
    """Student scores: the last class-attention block's materialised attention (b h 1 1+n), head mean, CLS column
    dropped, as the official `attn.mean(dim=1)[:, 0, 1:]`."""
    name, kw = CASES[0]
    ref = timm_cait(name, **kw)
    cfg = mkd.vit_config(name, **kw)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    attn_mod = ref.blocks_token_only[-1].attn
    attn_mod.fused_attn = False
    seen = {}
    hook = attn_mod.attn_drop.register_forward_hook(lambda m, inp, out: seen.setdefault("a", inp[0]))
    x = _x(cfg, b=3, seed=1)
    with torch.no_grad():
        ref(x)
        _, scores = mkd.student_forward(params, x, cfg)
    hook.remove()
    assert seen["a"].shape == (3, cfg.num_heads, 1, 1 + cfg.num_patches)
    torch.testing.assert_close(scores, seen["a"].mean(dim=1)[:, 0, 1:], atol=1e-6, rtol=1e-5)


def _small_cait():
    cfg = mkd.ViTConfig(img_size=16, patch_size=4, num_classes=7, embed_dim=32, depth=2, num_heads=4,
                        family="cait", class_attn_depth=2, pos_embed_prefix=False, layer_scale=0.5)
    g = torch.Generator().manual_seed(5)
    params = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in mkd.init_params(cfg).items()}
    return cfg, params


def test_keep_all_in_any_order_equals_forward_and_padding_equals_own_patches():
    cfg, params = _small_cait()
    x = _x(cfg, b=3)
    perm = _keep(cfg, 3, cfg.num_patches, seed=3)
    keep = _keep(cfg, 3, 9, seed=4)
    valid = torch.tensor([[True] * 9, [True] * 5 + [False] * 4, [True] * 2 + [False] * 7])
    with torch.no_grad():
        torch.testing.assert_close(mkd.teacher_forward(params, x, cfg, perm), mkd.forward(params, x, cfg),
                                   atol=2e-5, rtol=1e-5)
        # a per-sample budget padded to 9 (key mask through talking heads and class attention) == each sample alone
        tokens, _ = mkd.forward_tokens(params, x, cfg, keep, keep_valid=valid)
        padded = mkd.model.head(params, tokens, cfg)
        for i, n in enumerate((9, 5, 2)):
            alone = mkd.teacher_forward(params, x[i:i + 1], cfg, keep[i:i + 1, :n])
            torch.testing.assert_close(padded[i:i + 1], alone, atol=2e-5, rtol=1e-5)


def test_student_forward_trains_with_drop_path():
    """Gradients reach every parameter but proj_l's bias (a constant shift of the logits before the softmax: its
    true gradient is zero, so the forward never reads it); stochastic depth changes the output."""
    cfg, params = _small_cait()
    params = {k: v.requires_grad_() for k, v in params.items()}
    x = _x(cfg)
    logits, _ = mkd.student_forward(params, x, cfg, drop_path=0.5, generator=torch.Generator().manual_seed(0))
    logits.sum().backward()
    for k, v in params.items():
        assert (v.grad is None) == k.endswith("proj_l.bias"), k
    with torch.no_grad():
        assert (logits - mkd.student_forward(params, x, cfg)[0]).abs().max() > 1e-3


SMALL_CFGS = [
    mkd.ViTConfig(img_size=32, patch_size=8, num_classes=5, embed_dim=48, depth=2, num_heads=3, family="cait",
                  class_attn_depth=2, pos_embed_prefix=False, layer_scale=0.1),
    mkd.ViTConfig(img_size=(16, 24), patch_size=4, num_classes=3, embed_dim=32, depth=1, num_heads=4,
                  family="cait", class_attn_depth=3, pos_embed_prefix=False, layer_scale=0.1, mlp_ratio=2.0),
]


@pytest.mark.parametrize("cfg", SMALL_CFGS, ids=["cait", "cait-ca3"])
@pytest.mark.parametrize("keep", [None, 1, 7, "all"])
def test_macs_equal_flop_counter(cfg, keep):
    params, b = mkd.init_params(cfg), 3
    x = _x(cfg, b=b)
    k = cfg.num_patches if keep == "all" else keep
    idx = None if k is None else _keep(cfg, b, k)
    with torch.no_grad():
        counted = mkd.flops.counted_macs(mkd.teacher_forward, params, x, cfg, idx)
    assert counted == b * mkd.macs(cfg, k)


@pytest.mark.parametrize("k,paper_pflops", [(None, 3591), (144, 2583), (98, 1728)])
def test_cait_s24_macs_counted_and_paper_pflops(k, paper_pflops):
    """The full-size CaiT-S24 on meta tensors: FlopCounterMode over our forward == macs(); the paper's PFLOPs
    column (300 epochs of ImageNet-1k) within 0.5% [docs/paper.md#flops-model]."""
    cfg = mkd.vit_config("cait_s24_224")
    params = {n: torch.empty(s, device="meta") for n, s in mkd.param_shapes(cfg).items()}
    x = torch.empty(1, 3, 224, 224, device="meta")
    idx = None if k is None else torch.zeros(1, k, dtype=torch.long, device="meta")
    counted = mkd.flops.counted_macs(mkd.teacher_forward, params, x, cfg, idx, check=False)
    assert counted == mkd.macs(cfg, k)
    assert mkd.pflops(mkd.macs(cfg, k), 300) == pytest.approx(paper_pflops, rel=5e-3)
    assert mkd.cait_macs(k) == mkd.macs(cfg, k)


def test_paper_cait_teacher_has_a_config():
    cfg = paper.teacher_config("CaiT-S24")
    assert cfg.name == "cait_s24_224" and cfg.family == "cait"
    rows = [r for r in paper.TABLE1 if r.teacher == "CaiT-S24" and r.pflops]
    assert len(rows) == 4
    for r in rows:
        assert mkd.pflops(paper.teacher_macs(r.teacher, r.kept), r.epochs) == pytest.approx(r.pflops, rel=3e-3)
    ledger = mkd.training_ledger(mkd.vit_config("deit_tiny_patch16_224"), cfg, 98)
    assert ledger["teacher_saving"] == pytest.approx(1 - 1728 / 3591, abs=3e-3)  # the paper's "-52%"


def test_init_matches_timm_names_and_release_wrapper():
    cfg = mkd.vit_config("cait_xxs24_224", depth=2)
    ref = timm_cait("cait_xxs24_224", depth=2)
    p = mkd.init_params(cfg)
    assert {k: tuple(v.shape) for k, v in p.items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert torch.all(p["blocks.1.gamma_2"] == 1e-5) and torch.all(p["blocks_token_only.1.gamma_1"] == 1e-5)
    # the official release S24_224.pth layout: {"model": sd} with DDP's "module." (timm names, gamma_1 kept)
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    got = mkd.load_checkpoint({"model": sd}, cfg)
    assert all(torch.equal(got[k], v) for k, v in ref.state_dict().items())
    with pytest.raises(ValueError, match=r"missing keys \['blocks.0.attn.proj_l.bias'"):
        mkd.load_checkpoint({k: v for k, v in ref.state_dict().items() if k != "blocks.0.attn.proj_l.bias"}, cfg)


@pytest.mark.parametrize("kw,msg", [
    ({"family": "cait", "pos_embed_prefix": False, "layer_scale": 1e-5}, "class_attn_depth >= 1"),
    ({"family": "cait", "class_attn_depth": 2, "layer_scale": 1e-5}, "pos_embed_prefix=False"),
    ({"class_attn_depth": 2}, "needs family='cait'"),
    ({"family": "swin"}, "family='swin' is not one of"),
])
def test_invalid_cait_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        mkd.ViTConfig(**kw)
