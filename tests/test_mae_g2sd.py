"""Table 1 rows 34-46: MAE-pretrained ViT-L/16 and ViT-H/14 students (global pool, layer-wise lr decay, a pre-trained
file as the start) distilled from DeiT3-H/14, and G2SD's distillation-token DeiT-S distilled from MAE's ViT-B."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import timm_model

import maskedkd as mkd
from maskedkd import TeacherView
from maskedkd.optim import make_optimizer, param_groups
from maskedkd.step import make_loss_fn, make_train_step

ROOT = Path(__file__).resolve().parents[1]


def _x(cfg, b=2, seed=0):
    return torch.randn(b, cfg.in_chans, *cfg.img_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ours,theirs", [("mae_vit_base_patch16", "vit_base_patch16_224"),
                                         ("mae_vit_large_patch16", "vit_large_patch16_224"),
                                         ("mae_vit_huge_patch14", "vit_huge_patch14_224")])
def test_mae_presets_are_timm_global_pool_models(ours, theirs):
    import timm
    ref = timm.create_model(theirs, pretrained=False, global_pool="avg", depth=1, num_classes=1000)
    cfg = mkd.vit_config(ours, depth=1)
    assert {k: tuple(v.shape) for k, v in ref.state_dict().items()} == mkd.param_shapes(cfg)
    assert "norm.weight" not in mkd.param_shapes(cfg) and cfg.head == "avg" and ours not in mkd.PRESETS


def test_mae_student_forward_equals_timm_global_pool():
    """Global pool of the patch tokens + fc_norm, no final norm: logits equal timm's vit_large_patch16_224 with
    global_pool='avg' (depth-reduced, perturbed); the scores are the CLS row of timm's last-block attention."""
    ref = timm_model("vit_large_patch16_224", global_pool="avg", depth=2, num_classes=10)
    cfg = mkd.vit_config("mae_vit_large_patch16", depth=2, num_classes=10)
    params = mkd.load_checkpoint(ref.state_dict(), cfg)
    x = _x(cfg)
    attn_mod = ref.blocks[-1].attn
    attn_mod.fused_attn = False
    seen = {}
    hook = attn_mod.attn_drop.register_forward_hook(lambda m, i, o: seen.setdefault("a", i[0]))
    with torch.no_grad():
        want = ref(x)
        got, scores = mkd.student_forward(params, x, cfg)
        got_f, got_t = mkd.forward(params, x, cfg), mkd.teacher_forward(params, x, cfg)
    hook.remove()
    assert want.abs().max() > 1e-2
    for g in (got, got_f, got_t):
        torch.testing.assert_close(g, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores, seen["a"].mean(dim=1)[:, 0, 1:], atol=1e-6, rtol=1e-5)


def _mae_pretrain_file(tmp_path, depth=2, **kw):
    """A pre-trained MAE encoder as timm's `.mae` tag holds it: CLS token, final norm, no head, no fc_norm."""
    import timm
    enc = timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=0, depth=depth, **kw)
    sd = {k: v.contiguous() for k, v in enc.state_dict().items()}
    assert "norm.weight" in sd and not any(k.startswith(("head", "fc_norm")) for k in sd)
    from safetensors.torch import save_file
    save_file(sd, str(tmp_path / "vit_large_patch16_224.mae.safetensors"))
    return tmp_path / "vit_large_patch16_224.mae.safetensors", sd


def test_load_init_starts_mae_fine_tuning_from_pretrained_encoder(tmp_path):
    path, sd = _mae_pretrain_file(tmp_path)
    cfg = mkd.vit_config("mae_vit_large_patch16", depth=2, num_classes=100)
    p = mkd.load_init(path, cfg, seed=1)
    assert set(p) == set(mkd.param_shapes(cfg))
    for k in p:  # the encoder comes from the file, unchanged
        if not k.startswith(("head", "fc_norm")):
            assert torch.equal(p[k], sd[k]), k
    assert 1e-5 < p["head.weight"].std() < 3e-5 and torch.equal(p["head.bias"], torch.zeros(100))  # MAE: std 2e-5
    assert torch.equal(p["fc_norm.weight"], torch.ones(1024)) and torch.equal(p["fc_norm.bias"], torch.zeros(1024))
    # MAE's own release layout ({"model": sd}) with decoder keys and a 1000-class head: head re-drawn, decoder dropped
    ft = {**sd, "head.weight": torch.ones(1000, 1024), "head.bias": torch.ones(1000),
          "decoder_embed.weight": torch.zeros(512, 1024), "mask_token": torch.zeros(1, 1, 512)}
    p2 = mkd.load_init({"model": ft}, cfg, seed=1)
    assert torch.equal(p2["head.weight"], p["head.weight"]) and torch.equal(p2["head.bias"], p["head.bias"])
    # anything else that does not fit is refused, named
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.attn.proj.bias'\]"):
        mkd.load_init({k: v for k, v in sd.items() if k != "blocks.1.attn.proj.bias"}, cfg)
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks.2.norm1.weight'\]"):
        mkd.load_init({**sd, "blocks.2.norm1.weight": torch.ones(1024)}, cfg)
    with pytest.raises(ValueError, match="mis-shaped.*pos_embed"):
        mkd.load_init({**sd, "pos_embed": torch.zeros(1, 257, 1024)}, cfg)


def test_load_init_g2sd_student_gets_a_distillation_token():
    """G2SD's generic-stage student (MAE pre-training layout: 1 + n positions, decoder and feature predictors) into
    timm's distilled DeiT-S: a zero position row for the new distillation token (G2SD adds none), fresh dist token
    and both heads."""
    cfg = mkd.vit_config("deit_small_distilled_patch16_224", depth=1, num_classes=10)
    plain = mkd.init_params(mkd.vit_config("deit_small_patch16_224", depth=1, num_classes=10), seed=3)
    sd = {k: v for k, v in plain.items() if not k.startswith("head")}
    sd.update({"decoder_pred.weight": torch.zeros(768, 256), "encoderfeature_pred.fc1.weight": torch.zeros(8, 384)})
    p = mkd.load_init(sd, cfg, seed=0)
    pos = p["pos_embed"]
    assert pos.shape == (1, 198, 384) and torch.equal(pos[:, 1], torch.zeros(1, 384))
    assert torch.equal(pos[:, :1], sd["pos_embed"][:, :1]) and torch.equal(pos[:, 2:], sd["pos_embed"][:, 1:])
    assert 0.01 < p["dist_token"].std() < 0.03 and 0.01 < p["head_dist.weight"].std() < 0.03
    assert torch.equal(p["blocks.0.mlp.fc1.weight"], sd["blocks.0.mlp.fc1.weight"])


def _mae_layer_id(name, num_layers):
    """facebookresearch/mae util/lr_decay.py get_layer_id_for_vit, transcribed (num_layers = depth + 1)."""
    if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    return num_layers


def _mae_groups(named, weight_decay=0.05, layer_decay=0.75, no_wd=("pos_embed", "cls_token", "dist_token")):
    """MAE's param_groups_lrd over (name, ndim) pairs -> {(frozenset(names), lr_scale, weight_decay)}."""
    num_layers = 1 + max(int(n.split(".")[1]) for n, _ in named if n.startswith("blocks")) + 1
    scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    groups = {}
    for n, ndim in named:
        d = not (ndim == 1 or n in no_wd)
        lid = _mae_layer_id(n, num_layers)
        groups.setdefault((lid, d), (set(), scales[lid], weight_decay if d else 0.0))[0].add(n)
    return {(frozenset(g[0]), g[1], g[2]) for g in groups.values()}


def _ours(named, **kw):
    return {(frozenset(g["names"]), g["lr_scale"], g["weight_decay"])
            for g in param_groups(dict(named), weight_decay=0.05, layer_decay=0.75, **kw)}


def test_layer_decay_groups_equal_mae_and_timm():
    import timm
    from timm.optim import param_groups_layer_decay
    model = timm.create_model("vit_large_patch16_224", pretrained=False, global_pool="avg", depth=3, num_classes=10)
    named = [(n, p.ndim) for n, p in model.named_parameters()]
    ours = _ours(named)
    assert ours == _mae_groups(named)
    names = {id(p): n for n, p in model.named_parameters()}
    ref = {(frozenset(names[id(p)] for p in g["params"]), g["lr_scale"], g["weight_decay"])
           for g in param_groups_layer_decay(model, weight_decay=0.05, no_weight_decay_list=model.no_weight_decay(),
                                             layer_decay=0.75)}
    assert {(a, round(b, 12), c) for a, b, c in ours} == {(a, round(b, 12), c) for a, b, c in ref}
    assert len(ours) == 2 * 5  # stem, 3 blocks, the rest (fc_norm, head); each split into decay / no decay
    # G2SD's distilled DeiT-S follows MAE's rule, where dist_token is "the rest" (scale 1); timm puts it in the stem
    d = mkd.param_shapes(mkd.vit_config("deit_small_distilled_patch16_224", depth=2))
    named_d = [(n, len(s)) for n, s in d.items()]
    ours_d = _ours(named_d)
    assert ours_d == _mae_groups(named_d)
    assert next(g for g in ours_d if "dist_token" in g[0])[1:] == (1.0, 0.0)
    # the optimizer: each group starts at lr x its scale, the top group first; off: DeiT's two groups, no scale
    params = mkd.init_params(mkd.vit_config("mae_vit_large_patch16", depth=3, num_classes=10))
    opt = make_optimizer(params, lr=4e-3, layer_decay=0.75)
    assert [g["lr"] for g in opt.param_groups] == [4e-3 * g["lr_scale"] for g in opt.param_groups]
    assert opt.param_groups[0]["lr_scale"] == 1.0 and min(g["lr_scale"] for g in opt.param_groups) == 0.75 ** 4
    plain = make_optimizer(params, lr=4e-3)
    assert len(plain.param_groups) == 2 and not any("lr_scale" in g for g in plain.param_groups)


S = mkd.ViTConfig(name="s", img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=2)
T = S.replace(name="t", embed_dim=48, num_heads=3)
SD = S.replace(name="s_dist", num_prefix_tokens=2, head="token_dist")


@pytest.mark.parametrize("soft_targets", [False, True])
def test_g2sd_loss_by_hand(soft_targets):
    """G2SD's specific distillation (engine_finetune_dis.py): (CE(class head, labels) + CE(distillation head,
    teacher argmax)) / 2, the teacher masked by the student's CLS attention with both prefix columns dropped."""
    student, teacher = mkd.init_params(SD, seed=0), mkd.init_params(T, seed=1)
    x = _x(S, b=4, seed=2)
    y = torch.tensor([0, 1, 2, 3])
    if soft_targets:  # mixup / smoothing targets
        y = torch.softmax(torch.randn(4, 5, generator=torch.Generator().manual_seed(3)), -1)
    loss_fn = make_loss_fn(SD, view=TeacherView(T, teacher, 9), kind="hard", kd_weight=0.5, precision="fp32")
    loss, m = loss_fn(student, x, y)
    with torch.no_grad():
        tokens, scores = mkd.forward_tokens(student, x, SD, want_scores=True)
        assert scores.shape == (4, 16)  # patches only: CLS and distillation columns dropped
        cls, dist = tokens[:, 0] @ student["head.weight"].T + student["head.bias"], \
            tokens[:, 1] @ student["head_dist.weight"].T + student["head_dist.bias"]
        t = mkd.teacher_forward(teacher, x, T, torch.topk(scores, 9).indices)
    ce = F.cross_entropy(cls, y) if not soft_targets else (-y * F.log_softmax(cls, -1)).sum(-1).mean()
    want = 0.5 * ce + 0.5 * F.cross_entropy(dist, t.argmax(-1))
    torch.testing.assert_close(loss, want, atol=1e-6, rtol=1e-6)
    assert m["kept_tokens"] == 9.0
    pred = ((cls + dist) / 2).argmax(-1)
    assert m["agreement"] == (pred == t.argmax(-1)).float().mean()  # predictions as evaluated: both heads' mean
    # only that objective: no silent averaged-head training
    for keep, args in ((9, dict(kind="soft")), (9, dict(kind="manifold")), (None, dict(kind="hard", student_keep=4))):
        with pytest.raises(ValueError, match="distillation token"):
            make_loss_fn(SD, view=TeacherView(T, teacher, keep), **args)
    with pytest.raises(ValueError, match="distillation token.*no teacher"):
        make_loss_fn(SD, kind="hard")


class RecordingView(mkd.TeacherView):
    seen: list = []

    def __call__(self, x, scores=None, *, features=None):
        out = super().__call__(x, scores, features=features)
        RecordingView.seen.append((scores, out.keep_idx))
        return out


def test_mae_large_student_masks_deit3_huge_teacher_on_its_own_grid():
    """A masked step of the MAE-L/16 student (14x14 = 196 patches) with the DeiT3-H/14 teacher (16x16 = 256): the
    teacher's kept indices are the top-k of the student's CLS scores resampled onto the teacher's grid."""
    s_cfg = mkd.vit_config("mae_vit_large_patch16", depth=1, num_classes=10)
    t_cfg = mkd.vit_config("deit3_huge_patch14_224", depth=1, num_classes=10)
    student, teacher = mkd.init_params(s_cfg, seed=0), mkd.init_params(t_cfg, seed=1)
    view = RecordingView(t_cfg, teacher, 128)
    RecordingView.seen.clear()
    step = make_train_step(s_cfg, view=view, compile=False, precision="fp32", drop_path=0.2)
    x, y = _x(s_cfg, b=2, seed=4), torch.tensor([1, 7])
    m = step(student, make_optimizer(student, lr=1e-3, layer_decay=0.75), x, y)
    (scores, keep), = RecordingView.seen
    assert scores.shape == (2, 196) and keep.shape == (2, 128) and m["kept_tokens"] == 128.0
    resampled = mkd.resample_scores(scores, (14, 14), (16, 16))
    assert torch.equal(keep, torch.topk(resampled, 128).indices)
    assert torch.isfinite(m["loss"])


def _all_files(ck):
    from reproduce.lib import full
    ck.mkdir(exist_ok=True)
    for names in (*full.TEACHER_FILES.values(), *full.STUDENT_FILES.values()):
        (ck / names[0]).write_bytes(b"")


def test_full_dry_run_plans_all_46_rows(tmp_path, capsys):
    from reproduce.lib import full
    from reproduce.lib import paper
    ck = tmp_path / "ck"
    _all_files(ck)
    res = full.main(["--data", "/x", "--checkpoints", str(ck), "--dry-run", "--out", str(tmp_path / "dry")])
    text = capsys.readouterr().out
    assert len(paper.TABLE1) == len(res) == 46 and all(s is None and not n for _, s, n in res) and "skipped" not in text
    rows = [line for line in text.splitlines() if line.startswith("row ")]
    assert len(rows) == 46 and all("GPU-h" in r for r in rows)
    assert "row 34 DeiT-S (dist. token) / MAE-ViT-B / G2SD" in text
    from maskedkd.experiments import get_config
    row34 = get_config(str(tmp_path / "dry" / "full" / "row34" / "launch.json"))  # G2SD's recipe, as the row's run
    assert row34 == get_config("g2sd_deit_small_mae_vit_base").replace(
        name=row34.name, data_path="/x", out_dir=row34.out_dir, teacher=row34.teacher, init=row34.init)
    assert "init=" + str(ck / "mae_pretrain_vit_huge.pth") in text and "teacher_model=deit3_huge_patch14_224" in text
    assert text.count("num_keep=128 ") == 3 and text.count("num_keep=192 ") == 3  # DeiT3-H: 50% / 75% of 256
    assert "estimated total:" in text
    # a missing student file skips its rows, said so
    (ck / "mae_pretrain_vit_large.pth").unlink()
    full.main(["--data", "/x", "--checkpoints", str(ck), "--dry-run", "--rows", "36,43", "--out", str(tmp_path / "dry")])
    text = capsys.readouterr().out
    assert "row 36 MAE-ViT-L / None / No distillation: skipped (student file missing" in text
    assert "row 43 MAE-ViT-H / None / No distillation: ~" in text


def test_mae_and_g2sd_rows_tiny_end_to_end(tmp_path):
    """Rows 39 (MAE-L +MaskedKD 50% from DeiT3-H-1k), 43 (MAE-H, no KD) and 35 (G2SD +MaskedKD 75%) through
    full.main --tiny: real ImageFolder, real (tiny) teacher and student-start files, one step each; the layer-wise
    decay reaches the optimizer's groups."""
    from reproduce.lib import full
    from test_reproduce import _folder

    from maskedkd.experiments import MODELS
    ck, data = tmp_path / "ck", tmp_path / "data"
    _all_files(ck)
    _folder(data)
    tiny = dict(img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2, num_classes=3)
    for teacher, f in (("deit3_huge_patch14_224", "deit_3_huge_224_1k.pth"),
                       ("mae_vit_base_patch16", "mae_finetuned_vit_base.pth")):
        torch.save({"model": mkd.init_params(mkd.vit_config(teacher, **tiny))}, ck / f)
    for student, f in (("mae_vit_large_patch16", "mae_pretrain_vit_large.pth"),
                       ("mae_vit_huge_patch14", "mae_pretrain_vit_huge.pth")):
        p = mkd.init_params(mkd.vit_config(student, **tiny))
        enc = {k: v for k, v in p.items() if not k.startswith(("head", "fc_norm"))}
        torch.save({"model": {**enc, "norm.weight": torch.ones(32), "norm.bias": torch.zeros(32)}}, ck / f)
    plain = mkd.init_params(mkd.vit_config("deit_small_patch16_224", **tiny))
    torch.save({"model": {k: v for k, v in plain.items() if not k.startswith("head")}}, ck / "g2sd_generic_vit_small.pth")
    out = tmp_path / "out"
    try:
        res = full.main(["--data", str(data), "--checkpoints", str(ck), "--rows", "35,39,43", "--tiny", "--out",
                         str(out)])
    finally:
        for k in ("mae_vit_large_patch16", "mae_vit_huge_patch14", "deit3_huge_patch14_224", "mae_vit_base_patch16",
                  "deit_small_distilled_patch16_224"):
            MODELS.pop(k, None)
    assert [(fr.index, s["steps"], s["teacher"], note) for fr, s, note in res] == [
        (35, 1, "mae_vit_base_patch16", ""), (39, 1, "deit3_huge_patch14_224", ""), (43, 1, None, "")]
    assert res[0][1]["num_keep"] == 8 and res[0][1]["student"] == "deit_small_distilled_patch16_224"
    state = torch.load(out / "full" / "row39" / "checkpoint.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert len(groups) == 2 * 3 and groups[0]["lr_scale"] == 1.0
    assert all(g["lr"] == pytest.approx(groups[0]["lr"] * g["lr_scale"]) for g in groups)
    assert "| 39 | MAE-ViT-L | DeiT3-H-1k | +MaskedKD 50% | 86.1 |" in (out / "table1_full.md").read_text()


def test_training_program_evaluates_the_masked_teacher_on_the_students_grid(tmp_path, monkeypatch):
    """A student on another patch grid than its teacher (MAE-L/16 <- DeiT3-H/14): the evaluation's masked teacher
    resamples the student's scores as the train step does (the run's view knows the student's grid)."""
    from test_reproduce import _folder

    from maskedkd import train
    from maskedkd.experiments import MODELS, get_config
    _folder(tmp_path / "data")
    small = dict(img_size=32, depth=1, embed_dim=32, num_heads=2, num_classes=3)
    MODELS["_s16"] = mkd.vit_config("mae_vit_large_patch16", patch_size=8, **small)  # 4 x 4 patches
    MODELS["_t14"] = mkd.vit_config("deit3_huge_patch14_224", patch_size=4, **small)  # 8 x 8 patches
    mkd.save_params(mkd.init_params(MODELS["_t14"]), tmp_path / "t.safetensors")
    seen, evaluate = [], train.evaluate
    monkeypatch.setattr(train, "evaluate", lambda *a, **k: seen.append(a[4]) or evaluate(*a, **k))
    try:
        cfg = get_config("mae_vit_large_nokd").replace(
            model="_s16", teacher=str(tmp_path / "t.safetensors"), teacher_model="_t14", num_keep=32, epochs=1,
            batch_size=4, data_path=str(tmp_path / "data"), num_workers=0, compile=False, max_steps=1,
            out_dir=str(tmp_path / "run"), img_size=32, init_required=False)  # fresh weights: a grid test
        summary = train.run(cfg)
    finally:
        MODELS.pop("_s16"), MODELS.pop("_t14")
    assert seen[0].score_grid == (4, 4) and seen[0].cfg.grid_size == (8, 8)
    assert summary["steps"] == 1 and "teacher_acc_masked" in summary["history"][-1]


@pytest.mark.slow
@pytest.mark.parametrize("student,teacher_patch,kind", [("avg", 2, "soft"), ("token_dist", 4, "hard")],
                         ids=["mae_global_pool_other_grid", "g2sd_distillation_token"])
def test_compiled_step_equals_eager(student, teacher_patch, kind):
    """The compiled step of both new students equals eager (1e-4 after two steps with layer-wise lr decay): a
    global-pool student whose scores are resampled onto a finer teacher grid, and a distillation-token student."""
    s_cfg = S.replace(head=student, num_prefix_tokens=2 if student == "token_dist" else 1)
    t_cfg = T.replace(patch_size=teacher_patch)
    teacher = mkd.init_params(t_cfg, seed=7)
    x, y = _x(S, b=4, seed=5), torch.tensor([0, 1, 2, 3])
    results = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        params = mkd.init_params(s_cfg, seed=0)
        opt = make_optimizer(params, lr=1e-2, layer_decay=0.75)
        step = make_train_step(s_cfg, view=TeacherView(t_cfg, teacher, 6 * (4 // teacher_patch) ** 2), kind=kind,
                               compile=compiled, precision="fp32")
        results[compiled] = (params, [step(params, opt, x, y), step(params, opt, x.flip(0), y)])
    (pe, me), (pc, mc) = results[False], results[True]
    for k in pe:
        torch.testing.assert_close(pc[k], pe[k], atol=1e-4, rtol=1e-4)
    for a, b in zip(me, mc):
        torch.testing.assert_close(a["loss"], b["loss"], atol=1e-5, rtol=1e-5)
