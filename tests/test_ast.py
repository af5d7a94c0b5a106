"""AST: parity with transformers' ASTForAudioClassification (4.x and 5.x checkpoint names), scores, masked
teacher, MACs, patch embedding, position-embedding fitting, the DeiT init, and MaskedKD steps on sound events."""
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import maskedkd as mkd
from maskedkd import ast as mast
from maskedkd.data.sounds import synthetic_sound_events
from maskedkd.flops import block_macs, counted_macs


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast, and 2 threads ran 3-6x slower when another process held
    one of the 2 cores (measured: the KD test took 3.6 s vs 22 s)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _hf(max_length, num_labels=5, seed=0):
    """transformers' AST at random init (eager attention, so attentions come back), every weight nudged."""
    from transformers import ASTConfig, ASTForAudioClassification
    torch.manual_seed(seed)
    c = ASTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768,
                  max_length=max_length, num_mel_bins=128, num_labels=num_labels, attn_implementation="eager")
    m = ASTForAudioClassification(c).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return m


def _cfg(max_length, num_classes=5):
    return mast.ast_config(embed_dim=192, depth=2, num_heads=3, max_length=max_length, num_classes=num_classes)


# transformers 5.x layer names -> the 4.x names of the published checkpoints (MIT/ast-finetuned-audioset-...)
V4 = [("audio_spectrogram_transformer.layers.", "audio_spectrogram_transformer.encoder.layer."),
      ("attention.q_proj", "attention.attention.query"), ("attention.k_proj", "attention.attention.key"),
      ("attention.v_proj", "attention.attention.value"), ("attention.o_proj", "attention.output.dense"),
      ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]


def _to_v4(sd):
    out = {}
    for k, v in sd.items():
        for a, b in V4:
            k = k.replace(a, b)
        out[k] = v
    return out


def _x(cfg, b=2, seed=0):
    return torch.randn(b, cfg.img_size[1], cfg.img_size[0], generator=torch.Generator().manual_seed(seed))


def test_config_matches_transformers_defaults_and_paper_grid():
    from transformers import ASTConfig
    hf, cfg = ASTConfig(), mast.ast_config("base384")
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden) == (
        hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.intermediate_size)
    assert cfg.norm_eps == hf.layer_norm_eps == 1e-12 and cfg.qkv_bias == hf.qkv_bias
    assert cfg.img_size == (hf.num_mel_bins, hf.max_length) == (128, 1024)
    assert cfg.stride == (hf.frequency_stride, hf.time_stride) and cfg.patch_size == hf.patch_size == 16
    assert cfg.grid_size == (12, 101) and cfg.num_patches == 1212 and cfg.num_classes == 527
    assert (cfg.in_chans, cfg.num_prefix_tokens, cfg.head, cfg.input_layout) == (1, 2, "prefix_mean", "btf")
    assert mast.ast_config("tiny224").embed_dim == 192 and mast.ast_config("small224").num_heads == 6
    with pytest.raises(ValueError, match="valid presets: .*base384"):
        mast.ast_config("huge")
    with pytest.raises(ValueError, match=r"unknown keyword\(s\) \['hidden_size'\].*max_length"):
        mast.ast_config(hidden_size=5)


@pytest.mark.parametrize("max_length", [100, 128])
@pytest.mark.parametrize("names,fname", [("v5", "model.safetensors"), ("v4", "pytorch_model.bin")])
def test_logits_match_transformers(max_length, names, fname, tmp_path):
    ref, cfg = _hf(max_length), _cfg(max_length)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if names == "v4":
        sd = _to_v4(sd)
        assert "audio_spectrogram_transformer.encoder.layer.1.attention.attention.value.bias" in sd
        assert "audio_spectrogram_transformer.encoder.layer.0.output.dense.weight" in sd
    if fname.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(sd, str(tmp_path / fname))
    else:
        torch.save(sd, tmp_path / fname)
    params = mkd.load_checkpoint(tmp_path / fname, cfg)
    x = _x(cfg)
    with torch.no_grad():
        want = ref(x).logits
        got, got_t, (got_s, _) = (mkd.forward(params, x, cfg), mkd.teacher_forward(params, x, cfg),
                                  mkd.student_forward(params, x, cfg))
    assert want.abs().max() > 1e-2
    for g in (got, got_t, got_s):
        torch.testing.assert_close(g, want, atol=1e-5, rtol=1e-5)


def test_converter_leaves_other_dicts_alone_and_reports_bad_keys():
    cfg = _cfg(100)
    p = mkd.init_params(cfg, seed=1)
    assert mast.convert_hf_ast(p, cfg) is p and mast.convert_hf_ast in mkd.checkpoint.CONVERTERS
    sd = dict(_hf(100).state_dict())
    del sd["audio_spectrogram_transformer.layers.1.attention.k_proj.weight"]
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.attn.qkv.weight'\].*"
                                         r"audio_spectrogram_transformer.layers.1.attention.q_proj.weight"):
        mkd.load_checkpoint(sd, cfg)


def test_scores_equal_transformers_last_layer_cls_attention():
    ref, cfg = _hf(100), _cfg(100)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    x = _x(cfg, b=3, seed=1)
    with torch.no_grad():
        attn = ref(x, output_attentions=True).attentions[-1]
        _, scores = mkd.student_forward(params, x, cfg)
    assert attn.shape == (3, 3, 110, 110)
    want = attn.mean(dim=1)[:, 0, 2:]  # both prefix columns (CLS, distillation) dropped
    assert scores.shape == (3, 108)
    torch.testing.assert_close(scores, want, atol=1e-6, rtol=1e-5)
    k = mkd.keep_count(108, 0.5)
    assert torch.equal(mkd.select_tokens(scores, k).sort(-1).values, want.topk(k).indices.sort(-1).values)


def _hf_masked(model, x, keep):
    """A masked teacher on transformers' own modules: embeddings (position added), keep tokens 0 and 1 plus the
    chosen patches (a per-sample loop), layers, layernorm, mean of the two prefix tokens, classifier."""
    ast = model.audio_spectrogram_transformer
    with torch.no_grad():
        tok = ast.embeddings(x)
        h = torch.stack([torch.cat([tok[i, :2], tok[i, 2 + keep[i]]]) for i in range(x.shape[0])])
        for layer in ast.layers:
            h = layer(h, None)
        h = ast.layernorm(h)
        return model.classifier((h[:, 0] + h[:, 1]) / 2)


def test_masked_teacher_keeps_both_prefix_tokens():
    ref, cfg = _hf(128), _cfg(128)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    x, g = _x(cfg, b=3, seed=2), torch.Generator().manual_seed(0)
    keep = torch.stack([torch.randperm(cfg.num_patches, generator=g)[:40] for _ in range(3)])
    with torch.no_grad():
        got = mkd.teacher_forward(params, x, cfg, keep)
        full = mkd.forward(params, x, cfg)
        nudged = params["dist_token"] + torch.randn(params["dist_token"].shape, generator=g)
        other = mkd.teacher_forward({**params, "dist_token": nudged}, x, cfg, keep)
        perm = torch.stack([torch.randperm(cfg.num_patches, generator=g) for _ in range(3)])
        all_perm = mkd.teacher_forward(params, x, cfg, perm)
    torch.testing.assert_close(got, _hf_masked(ref, x, keep), atol=1e-5, rtol=1e-5)
    assert (got - full).abs().max() > 1e-3 and (other - got).abs().max() > 1e-3  # dist token reaches it
    torch.testing.assert_close(all_perm, full, atol=1e-5, rtol=1e-5)


def test_macs_equal_flop_counter_and_count_all_1212_patches():
    cfg = mast.ast_config(embed_dim=64, depth=1, num_heads=2, num_classes=10)  # 1024 frames x 128 bins
    params, x = mkd.init_params(cfg), _x(cfg, b=2)
    idx = mkd.select_tokens(torch.rand(2, 1212, generator=torch.Generator().manual_seed(0)), 606)
    with torch.no_grad():
        assert counted_macs(mkd.teacher_forward, params, x, cfg, None) / 2 == mkd.macs(cfg)
        assert counted_macs(mkd.teacher_forward, params, x, cfg, idx) / 2 == mkd.macs(cfg, 606)
    embed = 1212 * (1 * 16 * 16) * 64  # every patch is embedded before masking
    assert mkd.macs(cfg, 606) == block_macs(cfg, 2 + 606) + embed + 64 * 10
    n, d = 1214, 768  # base384: 12 blocks over 1214 tokens + patch embedding + 527-class head = 130.5 GMACs
    assert mkd.macs(mast.ast_config("base384")) == 12 * (4 * n * d * d + 2 * n * n * d + 8 * n * d * d) + \
        1212 * 256 * d + d * 527 == 130_514_373_888


def test_patch_embedding_equals_transformers_conv():
    ref, cfg = _hf(100), _cfg(100)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    x = _x(cfg, b=2, seed=3)
    with torch.no_grad():
        want = ref.audio_spectrogram_transformer.embeddings.patch_embeddings(x)
        got = mkd.patch_embed(x, params["patch_embed.proj.weight"], params["patch_embed.proj.bias"], cfg)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    img = rearrange(x, "b t f -> b 1 f t")  # patch (row r, col c) = mel bins 10r..10r+15, frames 10c..10c+15
    patches = mkd.patchify(img, 16, cfg.stride)
    assert torch.equal(patches[:, 1 * 9 + 4], rearrange(img[:, :, 10:26, 40:56], "b c p q -> b (c p q)"))


def test_position_embedding_cut_from_the_middle_for_fewer_frames():
    ref, cfg100 = _hf(128), _cfg(100)  # time grid 12 -> 9: columns 2..10 (12 // 2 - 9 // 2 = 2), as AST does
    params = mkd.load_checkpoint(ref.state_dict(), cfg100)
    src = ref.state_dict()["audio_spectrogram_transformer.embeddings.position_embeddings"]
    grid = rearrange(src[:, 2:], "o (f t) d -> o f t d", f=12, t=12)
    assert params["pos_embed"].shape == (1, 2 + 108, 192)
    assert torch.equal(params["pos_embed"][:, :2], src[:, :2])
    assert torch.equal(params["pos_embed"][:, 2:], rearrange(grid[:, :, 2:11], "o f t d -> o (f t) d"))
    with torch.no_grad():
        assert torch.isfinite(mkd.forward(params, _x(cfg100), cfg100)).all()
    # more frames: bilinear along time; ESC-50's 512 frames keep AudioSet's time columns 25..74 of 101
    up = mkd.load_checkpoint(_hf(100).state_dict(), _cfg(128))["pos_embed"]
    small = rearrange(_hf(100).state_dict()["audio_spectrogram_transformer.embeddings.position_embeddings"][:, 2:],
                      "o (f t) d -> o d f t", f=12)
    want = F.interpolate(small, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[:, 2:], rearrange(want, "o d f t -> o (f t) d"))
    pos = torch.randn(1, 2 + 12 * 101, 4)
    esc = mast.adapt_pos_embed(pos, (12, 101), (12, 50))
    assert torch.equal(esc[:, 2:].reshape(12, 50, 4), pos[0, 2:].reshape(12, 101, 4)[:, 25:75])


def test_ast_from_deit_sums_filters_and_fits_positions():
    deit_cfg = mkd.vit_config("deit_tiny_distilled_patch16_224", depth=2)
    deit = mkd.init_params(deit_cfg, seed=1)
    deit["pos_embed"] = torch.randn(deit["pos_embed"].shape)
    cfg = mast.ast_config("tiny224", depth=2, num_classes=10)  # 1024 x 128: grid 12 x 101 from DeiT's 14 x 14
    p = mast.ast_from_deit(deit, deit_cfg, cfg)
    assert p["patch_embed.proj.weight"].shape == (192, 1, 16, 16) and p["pos_embed"].shape == (1, 1214, 192)
    torch.testing.assert_close(p["patch_embed.proj.weight"], deit["patch_embed.proj.weight"].sum(1, keepdim=True))
    assert all(torch.equal(p[k], deit[k]) for k in deit if k.startswith("blocks.") or k.endswith("_token"))
    assert p["head.weight"].shape == (10, 192) and torch.equal(p["pos_embed"][:, :2], deit["pos_embed"][:, :2])
    g = rearrange(deit["pos_embed"][:, 2:], "o (f t) d -> o d f t", f=14)
    want = F.interpolate(g, size=(14, 101), mode="bilinear", align_corners=False)[:, :, 1:13]  # time up, freq cut
    torch.testing.assert_close(p["pos_embed"][:, 2:], rearrange(want, "o d f t -> o (f t) d"))
    # one channel x equals the RGB image (x, x, x): a 224 x 224 "spectrogram" with stride 16 embeds identically
    cfg224 = mast.ast_config("tiny224", depth=2, max_length=224, num_mel_bins=224, frequency_stride=16,
                             time_stride=16, num_classes=10)
    p224, x = mast.ast_from_deit(deit, deit_cfg, cfg224), _x(cfg224, b=2)
    img = rearrange(x, "b t f -> b 1 f t").expand(-1, 3, -1, -1)
    for a, b in zip(mkd.embed(p224, x, cfg224), mkd.embed(deit, img, deit_cfg)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="num_prefix_tokens=1"):
        mast.ast_from_deit(mkd.init_params(mkd.vit_config("deit_tiny_patch16_224", depth=2)),
                           mkd.vit_config("deit_tiny_patch16_224", depth=2), cfg)


def test_wrong_spectrogram_shape_is_rejected():
    cfg = _cfg(100)
    params = mkd.init_params(cfg)
    with pytest.raises(ValueError, match="64 mel bins, config expects num_mel_bins=128"):
        mkd.forward(params, torch.zeros(1, 100, 64), cfg)
    with pytest.raises(ValueError, match="90 frames, config expects max_length=100"):
        mkd.teacher_forward(params, torch.zeros(1, 90, 128), cfg)


def test_maskedkd_steps_on_sound_events_reduce_the_loss():
    d = synthetic_sound_events(n_train=20, n_test=0, seed=3)
    x, y = d["x_train"], d["y_train"]
    t_cfg = mast.ast_config(embed_dim=64, depth=2, num_heads=2, max_length=100, num_classes=10)
    s_cfg = t_cfg.replace(embed_dim=32)
    teacher = {k: v.requires_grad_() for k, v in mkd.init_params(t_cfg, seed=0).items()}
    opt = torch.optim.AdamW(teacher.values(), lr=1e-3)
    ce = []
    for _ in range(6):  # a briefly trained teacher
        loss = mkd.cross_entropy(mkd.forward(teacher, x, t_cfg), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ce.append(loss.item())
    assert ce[-1] < 0.9 * ce[0], ce
    teacher = {k: v.detach() for k, v in teacher.items()}
    student = {k: v.requires_grad_() for k, v in mkd.init_params(s_cfg, seed=1).items()}
    opt = torch.optim.AdamW(student.values(), lr=3e-3)
    k, losses = mkd.keep_count(s_cfg.num_patches, 0.5), []
    for _ in range(8):
        logits, scores = mkd.student_forward(student, x, s_cfg)
        keep = mkd.select_tokens(scores.detach(), k)
        with torch.no_grad():
            t_logits = mkd.teacher_forward(teacher, x, t_cfg, keep)
        loss = mkd.kd_loss(logits, t_logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert keep.shape == (20, 54) and t_logits.requires_grad is False
    assert losses[-1] < 0.9 * losses[0], losses  # measured 1.227 -> 1.061
