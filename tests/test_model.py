"""Teacher and student forward invariants on small configs (no reference library needed)."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import maskedkd as mkd

TINY = mkd.ViTConfig(img_size=16, patch_size=4, num_classes=7, embed_dim=32, depth=2, num_heads=2)
TINY_DIST = TINY.replace(num_prefix_tokens=2, head="token_dist")
TINY_LS = TINY.replace(pos_embed_prefix=False, layer_scale=0.5)
CFGS = {"deit": TINY, "distilled": TINY_DIST, "deit3": TINY_LS}


def _x(cfg, b=3, seed=0):
    return torch.randn(b, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(seed))


def _params(cfg, seed=0):
    p = mkd.init_params(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in p.items()}  # make tokens matter


@pytest.mark.parametrize("kind", sorted(CFGS))
@given(seed=st.integers(0, 2**16))
def test_keep_all_in_any_permutation_equals_plain_forward(kind, seed):
    cfg = CFGS[kind]
    params, x = _params(cfg), _x(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(cfg.num_patches, generator=g) for _ in range(x.shape[0])])
    with torch.no_grad():
        torch.testing.assert_close(mkd.teacher_forward(params, x, cfg, perm), mkd.forward(params, x, cfg),
                                   atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(CFGS))
@given(seed=st.integers(0, 2**16), k=st.integers(1, 16))
def test_masked_teacher_is_permutation_invariant_in_keep_order(kind, seed, k):
    cfg = CFGS[kind]
    params, x = _params(cfg), _x(cfg, b=2, seed=seed)
    g = torch.Generator().manual_seed(seed)
    keep = torch.stack([torch.randperm(cfg.num_patches, generator=g)[:k] for _ in range(2)])
    shuffled = torch.stack([row[torch.randperm(k, generator=g)] for row in keep])
    with torch.no_grad():
        torch.testing.assert_close(mkd.teacher_forward(params, x, cfg, keep),
                                   mkd.teacher_forward(params, x, cfg, shuffled), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(CFGS))
def test_prefix_kept_and_patches_keep_their_positions(kind):
    """The token sequence the teacher's blocks see is [prefix tokens, patch_i + pos_i for kept i]."""
    cfg = CFGS[kind]
    params, x = _params(cfg), _x(cfg)
    keep = torch.tensor([[3, 0, 9], [15, 1, 2], [7, 7, 4]])
    prefix, patches = mkd.embed(params, x, cfg)
    assert prefix.shape[1] == cfg.num_prefix_tokens
    raw = mkd.patch_embed(x, params["patch_embed.proj.weight"], params["patch_embed.proj.bias"], cfg)
    pos = params["pos_embed"][0, -cfg.num_patches:]
    got = mkd.gather_patches(patches, keep)
    for b in range(3):
        for j, i in enumerate(keep[b].tolist()):
            torch.testing.assert_close(got[b, j], raw[b, i] + pos[i])
    # prefix tokens: cls (and dist) token, with their position embedding only where the model has one
    want_cls = params["cls_token"][0, 0] + (params["pos_embed"][0, 0] if cfg.pos_embed_prefix else 0)
    torch.testing.assert_close(prefix[:, 0], want_cls.expand(3, -1))


def test_teacher_output_depends_on_prefix_token():
    """Changing the CLS token changes the masked teacher's output: the prefix really reaches the blocks."""
    params, x = _params(TINY), _x(TINY)
    keep = torch.arange(4).expand(3, 4)
    other = dict(params, cls_token=params["cls_token"] + torch.randn(params["cls_token"].shape))
    with torch.no_grad():
        a, b = mkd.teacher_forward(params, x, TINY, keep), mkd.teacher_forward(other, x, TINY, keep)
    assert (a - b).abs().max() > 1e-3


def test_no_gradient_reaches_the_teacher():
    cfg = TINY
    student = {k: v.requires_grad_() for k, v in _params(cfg, seed=1).items()}
    teacher = {k: v.requires_grad_() for k, v in _params(cfg, seed=2).items()}
    x, y = _x(cfg), torch.tensor([0, 1, 2])
    logits, scores = mkd.student_forward(student, x, cfg)
    keep = mkd.select_tokens(scores, 8)
    t_logits = mkd.teacher_forward(teacher, x, cfg, keep)  # even without no_grad, kd_loss detaches
    mkd.kd_loss(logits, t_logits, y).backward()
    assert all(p.grad is None for p in teacher.values())
    assert all(p.grad is not None for p in student.values())
    assert student["blocks.0.attn.qkv.weight"].grad.abs().sum() > 0


def test_scores_match_materialised_attention_and_are_fp32_under_autocast():
    cfg = TINY
    params, x = _params(cfg), _x(cfg)
    prefix, patches = mkd.embed(params, x, cfg)
    tokens = torch.cat([prefix, patches], 1)
    for i in range(cfg.depth - 1):
        tokens, _ = mkd.block(tokens, params, i, cfg)
    from maskedkd.attention import layer_norm, linear
    h = layer_norm(tokens, params, f"blocks.{cfg.depth - 1}.norm1", cfg.norm_eps)
    qkv = linear(h, params, f"blocks.{cfg.depth - 1}.attn.qkv")  # b n (3 h d), timm's packing
    q, k, _ = qkv.unflatten(-1, (3, 2, 16)).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-1, -2) / 16**0.5).softmax(-1)  # b h n n, materialised here only
    want = attn.mean(1)[:, 0, 1:]
    _, scores = mkd.student_forward(params, x, cfg)
    torch.testing.assert_close(scores, want, atol=1e-6, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, s16 = mkd.student_forward(params, x, cfg)
    assert s16.dtype == torch.float32
    torch.testing.assert_close(s16, want, atol=2e-2, rtol=0)


def test_drop_path_only_when_asked():
    params, x = _params(TINY), _x(TINY)
    a, b = mkd.forward(params, x, TINY), mkd.forward(params, x, TINY)
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    c = mkd.forward(params, x, TINY, drop_path=0.5, generator=g)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("bad,msg", [
    (torch.randn(2, 3, 16, 18), "not divisible by patch size 4"),
    (torch.randn(2, 1, 16, 16), "1 channels"),
    (torch.randn(2, 3, 20, 20), "differs from the config"),
    (torch.randn(3, 16, 16), "must be \\(b, c, h, w\\)"),
])
def test_bad_images_raise(bad, msg):
    with pytest.raises(ValueError, match=msg):
        mkd.forward(_params(TINY), bad, TINY)


@pytest.mark.parametrize("keep,msg", [
    (torch.tensor([[0, 16], [1, 2], [3, 4]]), "0..15, got min 0 max 16"),
    (torch.tensor([[-1, 2], [1, 2], [3, 4]]), "got min -1"),
    (torch.zeros(3, 17, dtype=torch.long), "keeps 17 patches"),
    (torch.zeros(2, 4, dtype=torch.long), "b=3"),
    (torch.zeros(3, 4), "integer"),
])
def test_bad_keep_idx_raises(keep, msg):
    with pytest.raises(ValueError, match=msg):
        mkd.teacher_forward(_params(TINY), _x(TINY), TINY, keep)


def test_init_is_seeded():
    a, b, c = mkd.init_params(TINY, seed=0), mkd.init_params(TINY, seed=0), mkd.init_params(TINY, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])
    assert set(a) == set(mkd.param_shapes(TINY))
