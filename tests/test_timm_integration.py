"""timm integration: `config_from_timm` runs a timm module's own Parameters in the functional core (parity with the
module's forward, masked teacher included, training through make_train_step), unsupported families and options raise
naming them; `MaskedLogitDistillationTask` equals timm's LogitDistillationTask with every patch kept and the project's
functional MaskedKD loss with masking, works under DDP (one gloo process) and under compile."""
import copy

import pytest
import torch
import torch.nn.functional as F

import maskedkd as mkd
from maskedkd.from_timm import drop_path_from_timm

timm = pytest.importorskip("timm")
from timm.task import LogitDistillationTask  # noqa: E402

from maskedkd.timm_task import MaskedLogitDistillationTask, StudentWithScores  # noqa: E402

TINY = {"img_size": 32, "patch_size": 8, "num_classes": 5, "depth": 2}  # 16 patches
CLIP = {**TINY, "embed_dim": 64, "num_heads": 4}
CASES = [  # (timm name, timm kwargs, our preset and overrides giving the same config)
    ("deit_tiny_patch16_224", TINY, "deit_tiny_patch16_224", TINY),
    ("deit3_small_patch16_224", TINY, "deit3_small_patch16_224", TINY),
    ("deit_tiny_distilled_patch16_224", TINY, "deit_tiny_distilled_patch16_224", TINY),
    ("vit_base_patch16_clip_224", CLIP, "vit_base_patch16_clip_224", CLIP),
    ("vit_base_patch16_clip_quickgelu_224", CLIP, "vit_base_patch16_clip_quickgelu_224", CLIP),
    ("cait_xxs24_224", {**TINY, "depth_token_only": 2}, "cait_xxs24_224", {**TINY, "class_attn_depth": 2}),
    # MAE fine-tuning: global average pool of the patch tokens, fc_norm, no final norm (the core's head="avg")
    ("vit_base_patch16_224", {**CLIP, "global_pool": "avg"}, "mae_vit_base_patch16", CLIP),
]
IDS = [c[0] + ("-avg" if c[1].get("global_pool") == "avg" else "") for c in CASES]


def _timm(name, seed=0, **kw):
    """A timm model at random init in eval mode, every parameter nudged and every layer scale set to U(0.5, 1.5)."""
    torch.manual_seed(seed)
    m = timm.create_model(name, pretrained=False, **kw).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith((".gamma", ".gamma_1", ".gamma_2")):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m


def _x(b=4, seed=0, size=32):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _y(b=4, seed=0, classes=5):
    return torch.randint(0, classes, (b,), generator=torch.Generator().manual_seed(seed))


def _timm_masked(m, x, keep):
    """The masked teacher built from the timm module's own submodules: embed + position, keep the prefix tokens and
    the gathered patches, blocks (CaiT: class attention over them), norm, head."""
    from timm.models.cait import Cait
    if isinstance(m, Cait):
        patches = m.patch_embed(x) + m.pos_embed
        patches = mkd.gather_patches(patches, keep)
        return m.forward_head(m.norm(m.forward_cls(m.blocks(patches))))
    tokens = m._pos_embed(m.patch_embed(x))
    n = m.num_prefix_tokens
    tokens = torch.cat([tokens[:, :n], mkd.gather_patches(tokens[:, n:], keep)], dim=1)
    return m.forward_head(m.norm(m.blocks(m.norm_pre(tokens))))


@pytest.mark.parametrize("name,kw,preset,preset_kw", CASES, ids=IDS)
def test_module_parameters_run_in_the_core_equal_to_the_module(name, kw, preset, preset_kw):
    m = _timm(name, **kw)
    cfg = mkd.config_from_timm(m)
    assert cfg.name == name and cfg.replace(name=preset) == mkd.vit_config(preset, **preset_kw)  # our preset
    params = dict(m.named_parameters())
    assert all(params[k] is p for k, p in m.named_parameters())  # the module's own tensors, no copy
    x = _x()
    keep = torch.stack([torch.randperm(cfg.num_patches, generator=torch.Generator().manual_seed(i))[:7]
                        for i in range(x.shape[0])])
    with torch.no_grad():
        want = m(x)
        got = mkd.forward(params, x, cfg)
        got_s, scores = mkd.student_forward(params, x, cfg)
        got_t = mkd.teacher_forward(params, x, cfg, keep)
        want_t = _timm_masked(m, x, keep)
    assert want.abs().max() > 0.1 and (want_t - want).abs().max() > 1e-3  # not trivial; masking matters
    for a, b in ((got, want), (got_s, want), (got_t, want_t)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert scores.shape == (x.shape[0], cfg.num_patches) and torch.all(scores > 0)


def test_an_mlp_width_whose_ratio_does_not_round_trip():
    """timm's hidden width int(56 * 2.0536) = 115, but 56 * (115 / 56) < 115 in floating point: the config keeps 115."""
    m = _timm("vit_tiny_patch16_224", **{**TINY, "embed_dim": 56, "num_heads": 2, "mlp_ratio": 2.0536})
    cfg = mkd.config_from_timm(m)
    assert m.blocks[0].mlp.fc1.out_features == cfg.mlp_hidden == 115
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(mkd.forward(dict(m.named_parameters()), x, cfg), m(x), atol=1e-5, rtol=1e-5)


BASE = ("vit_tiny_patch16_224", {**TINY, "depth": 1})
UNSUPPORTED = [  # (timm name, kwargs, message naming the option)
    ("swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 1, 1, 1)},
     r"model class timm\.models\.swin_transformer\.SwinTransformer is not supported"),
    ("resnet18", {}, r"model class timm\.models\.resnet\.ResNet is not supported"),
    (BASE[0], {"global_pool": "max"}, r"global_pool='max'"),
    (BASE[0], {"global_pool": "avgmax"}, r"global_pool='avgmax'"),
    (BASE[0], {"global_pool": "map"}, r"global_pool='map'"),
    (BASE[0], {"global_pool": ""}, r"global_pool=''"),
    (BASE[0], {"class_token": False, "global_pool": "avg"}, r"class_token=False"),
    (BASE[0], {"global_pool": "avg", "fc_norm": False}, r"global_pool='avg' with fc_norm=False"),
    (BASE[0], {"global_pool": "avg", "pool_include_prefix": True}, r"pool_include_prefix=True"),
    (BASE[0], {"qk_norm": True}, r"qk_norm=True"),
    (BASE[0], {"dynamic_img_size": True}, r"dynamic_img_size=True"),
    (BASE[0], {"fc_norm": True}, r"fc_norm=True"),
    (BASE[0], {"final_norm": False}, r"final_norm=False"),
    (BASE[0], {"num_classes": 0}, r"num_classes=0"),
    (BASE[0], {"pos_embed": "none"}, r"pos_embed='none'"),
    (BASE[0], {"patch_drop_rate": 0.25}, r"patch_drop_rate=0.25"),
    (BASE[0], {"act_layer": "gelu_tanh"}, r"act_layer=GELUTanh"),
    (BASE[0], {"norm_layer": "rmsnorm"}, r"norm_layer=RmsNorm"),
    (BASE[0], {"scale_mlp_norm": True}, r"scale_mlp_norm=True"),
    (BASE[0], {"proj_bias": False}, r"proj_bias=False"),
    ("cait_xxs24_224", {**TINY, "global_pool": "avg"}, r"Cait: global_pool='avg'"),
    ("cait_xxs24_224", {**TINY, "mlp_ratio_token_only": 2.0}, r"mlp_ratio_token_only"),
]


@pytest.mark.parametrize("name,kw,match", UNSUPPORTED, ids=[f"{n}-{sorted(k)}" for n, k, _ in UNSUPPORTED])
def test_unsupported_families_and_options_raise_naming_them(name, kw, match):
    args = {**BASE[1], **kw} if name == BASE[0] or name.startswith("cait") else kw
    m = timm.create_model(name, pretrained=False, **args)
    with pytest.raises(ValueError, match=match):
        mkd.config_from_timm(m)


def test_options_of_training_and_of_block_types_raise_naming_them():
    from timm.models.vision_transformer import ResPostBlock
    m = timm.create_model(BASE[0], pretrained=False, block_fn=ResPostBlock, **BASE[1])
    with pytest.raises(ValueError, match=r"block_fn=ResPostBlock at blocks\.0"):
        mkd.config_from_timm(m)
    d = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **TINY)
    d.set_distilled_training(True)
    with pytest.raises(ValueError, match=r"distilled_training=True"):
        mkd.config_from_timm(d)
    # training options: stochastic depth maps to drop_path=, dropout the core does not apply raises
    assert drop_path_from_timm(timm.create_model(BASE[0], pretrained=False, drop_path_rate=0.2, **TINY)) == \
        pytest.approx(0.2)
    assert drop_path_from_timm(timm.create_model("cait_xxs24_224", pretrained=False, drop_path_rate=0.1, **TINY)) == \
        pytest.approx(0.1)
    for kw, what in (({"drop_rate": 0.1}, r"head_drop \(p=0\.1\)"), ({"proj_drop_rate": 0.1}, r"proj_drop"),
                     ({"attn_drop_rate": 0.1}, r"attn_drop"), ({"pos_drop_rate": 0.1}, r"pos_drop")):
        with pytest.raises(ValueError, match=what):
            drop_path_from_timm(timm.create_model(BASE[0], pretrained=False, **kw, **TINY))
    with pytest.raises(ValueError, match=r"head_drop"):  # the task refuses a student it could not train faithfully
        MaskedLogitDistillationTask(timm.create_model(BASE[0], pretrained=False, drop_rate=0.1, **TINY),
                                    _timm("deit_small_patch16_224", **TINY), verbose=False)


@pytest.mark.parametrize("student", ["deit_tiny_patch16_224", "cait_xxs24_224"])
def test_make_train_step_trains_the_module_through_its_own_parameters(student):
    s = _timm(student, **TINY)
    t = _timm("deit3_small_patch16_224", seed=1, **TINY)
    cfg_s, cfg_t = mkd.config_from_timm(s), mkd.config_from_timm(t)
    params = dict(s.named_parameters())
    before = {k: p.detach().clone() for k, p in params.items()}
    lr = 0.5
    opt = torch.optim.SGD(s.parameters(), lr=lr)
    step = mkd.make_train_step(cfg_s, view=mkd.TeacherView(cfg_t, dict(t.named_parameters()), 6), compile=False)
    x, y = _x(), _y()
    with torch.no_grad():
        out_before = s(x)
    grads, _ = torch.func.grad(step.loss_fn, has_aux=True)(before, x, y)  # the reference gradient, on a copy
    metrics = step(params, opt, x, y)
    assert metrics["kept_tokens"].item() == 6
    for k, p in s.named_parameters():
        torch.testing.assert_close(p.detach(), before[k] - lr * grads[k], atol=1e-6, rtol=1e-5)
    assert max((p.detach() - before[k]).abs().max().item() for k, p in s.named_parameters()) > 1e-3
    with torch.no_grad():
        out = s(x)
        torch.testing.assert_close(mkd.forward(params, x, cfg_s), out, atol=1e-5, rtol=1e-5)
    assert (out - out_before).abs().max() > 1e-3


def _pair(teacher="deit_small_patch16_224", teacher_kw=TINY, **kw):
    return _timm("deit_tiny_patch16_224", **TINY, **kw), _timm(teacher, seed=1, **teacher_kw)


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


WEIGHTS = [{"task_loss_weight": 0.5, "temperature": 2.0}, {}, {"distill_loss_weight": 0.3, "temperature": 4.0}]
TEACHERS = [("deit_small_patch16_224", TINY), ("vit_base_patch16_clip_224", CLIP)]  # CLIP: re-normalised input


@pytest.mark.parametrize("weights", WEIGHTS, ids=["complementary", "default", "independent"])
@pytest.mark.parametrize("teacher,teacher_kw", TEACHERS, ids=["deit_s", "clip"])
def test_every_patch_kept_equals_timms_logit_distillation(weights, teacher, teacher_kw):
    s, t = _pair(teacher, teacher_kw)
    ce = torch.nn.CrossEntropyLoss()
    ref = LogitDistillationTask(s, t, criterion=ce, verbose=False, **weights)
    ours = MaskedLogitDistillationTask(s, t, criterion=ce, verbose=False, **weights)
    assert ours._same_norm == (teacher == "deit_small_patch16_224")
    x, y = _x(), _y()
    a, b = ref(x, y), ours(x, y)
    assert set(b) == set(a) | {"kept_tokens"} and b["kept_tokens"].item() == 16
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-5)
    gb = _grads(s, ours(x, y)["loss"])
    for k, g in _grads(s, ref(x, y)["loss"]).items():
        torch.testing.assert_close(gb[k], g, atol=1e-5, rtol=1e-4)


MASKED = [  # (teacher, its kwargs, num_keep of the teacher's patches)
    ("deit_small_patch16_224", TINY, 6),
    ("vit_base_patch16_clip_224", CLIP, 6),  # re-normalised teacher input
    ("cait_xxs24_224", {**TINY, "patch_size": 4}, 20),  # 64-patch teacher: the student's 16 scores resampled
    ("vit_base_patch16_224", {**CLIP, "global_pool": "avg"}, 6),  # MAE-style avg head, mean/std 0.5 (re-normalised)
]


@pytest.mark.parametrize("teacher,teacher_kw,k", MASKED, ids=[m[0] + m[1].get("global_pool", "") for m in MASKED])
def test_masked_loss_equals_the_functional_maskedkd_loss(teacher, teacher_kw, k):
    s, t = _pair(teacher, teacher_kw)
    a, temp = 0.5, 2.0
    task = MaskedLogitDistillationTask(s, t, criterion=torch.nn.CrossEntropyLoss(), task_loss_weight=1 - a,
                                       temperature=temp, num_keep=k, verbose=False)
    x, y = _x(), _y()
    out = task(x, y)
    assert out["kept_tokens"].item() == k
    # 1. the project's loss function (same weights, kd_weight = 1 - task_loss_weight), on the teacher's normalisation
    cfg_s, cfg_t = mkd.config_from_timm(s), mkd.config_from_timm(t)
    x_t = x
    stats = [torch.tensor(m.pretrained_cfg[k])[:, None, None] for m in (s, t) for k in ("mean", "std")]
    if any(not torch.equal(a, b) for a, b in zip(stats[:2], stats[2:])):  # timm's normalize_input, by hand
        s_mean, s_std, t_mean, t_std = stats
        x_t = (x * s_std + s_mean - t_mean) / t_std
    # 2. by hand from the same kept indices: the student's top-k (resampled onto the teacher's grid)
    params = dict(s.named_parameters())
    logits, scores = mkd.student_forward(params, x, cfg_s)
    keep = mkd.select_tokens(mkd.resample_scores(scores.detach(), cfg_s.grid_size, cfg_t.grid_size), k)
    with torch.no_grad():
        t_logits = mkd.teacher_forward(dict(t.named_parameters()), x_t, cfg_t, keep)
    by_hand = mkd.kd_loss(logits, t_logits, y, kd_weight=a, temperature=temp)
    torch.testing.assert_close(out["loss"], by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["kd_loss"], mkd.kd_divergence(logits, t_logits, temperature=temp))
    g_task, g_hand = _grads(s, out["loss"]), _grads(s, by_hand)
    if x_t is x:  # the loss function reads one input for both models
        loss_fn = mkd.make_loss_fn(cfg_s, view=mkd.TeacherView(cfg_t, dict(t.named_parameters()), k), kd_weight=a,
                                   temperature=temp)
        torch.testing.assert_close(out["loss"], loss_fn(params, x, y)[0], atol=1e-5, rtol=1e-5)
    for name, g in g_hand.items():
        torch.testing.assert_close(g_task[name], g, atol=1e-5, rtol=1e-4)
    # masking changed the teacher: the full-view loss differs
    full = MaskedLogitDistillationTask(s, t, task_loss_weight=1 - a, temperature=temp, verbose=False)(x, y)
    assert (full["kd_loss"] - out["kd_loss"]).abs() > 1e-4
    # timm's default weights (both 1) are twice kd_loss at kd_weight 0.5; keep_ratio is the project's keep_count
    both = MaskedLogitDistillationTask(s, t, temperature=temp, keep_ratio=k / cfg_t.num_patches, verbose=False)
    assert both.num_keep == k
    torch.testing.assert_close(both(x, y)["loss"], 2 * by_hand, atol=1e-5, rtol=1e-5)


def test_task_options_and_refusals():
    s, t = _pair()
    with pytest.raises(ValueError, match=r"not both"):
        MaskedLogitDistillationTask(s, t, num_keep=4, keep_ratio=0.5, verbose=False)
    with pytest.raises(ValueError, match=r"num_keep=17 must lie in \[1, 16\]"):
        MaskedLogitDistillationTask(s, t, num_keep=17, verbose=False)
    with pytest.raises(ValueError, match=r"unknown criterion 'nope'"):
        MaskedLogitDistillationTask(s, t, num_keep=4, mask_criterion="nope", verbose=False)
    with pytest.raises(ValueError, match=r"teacher has 7 classes, student 5"):
        MaskedLogitDistillationTask(s, _timm("deit_small_patch16_224", **{**TINY, "num_classes": 7}), verbose=False)
    with pytest.raises(ValueError, match=r"student input .* and teacher input .* differ"):
        MaskedLogitDistillationTask(s, _timm("deit_small_patch16_224", **{**TINY, "img_size": 64}), verbose=False)
    assert MaskedLogitDistillationTask(s, t, keep_ratio=1.0, verbose=False).view.mode == "full"
    task = MaskedLogitDistillationTask(s, t, num_keep=4, mask_criterion="bottomk", verbose=False)
    x, y = _x(), _y()
    _, scores = mkd.student_forward(dict(s.named_parameters()), x, task.student_cfg)
    assert torch.equal(task.view.select(x, scores)[0], mkd.select_tokens(scores, 4, "bottomk"))
    # the eval model is the timm student itself, checkpoints carry timm's names; the teacher stays in eval mode
    assert task.get_eval_model() is s and isinstance(task.get_trainable_module(), StudentWithScores)
    assert set(task.get_checkpoint_state()["state_dict"]) == set(s.state_dict())
    task.train()
    assert task.trainable_module.training and not t.training
    # timm's EMA copies the trainable module: its eval model is the EMA copy of the student, run on its own tensors
    ema = task.setup_ema(decay=0.5)
    ema_student = task.get_eval_model(ema=True)
    assert ema_student is ema.module.student and ema_student is not s
    assert all(ema.module._params[k] is p for k, p in ema_student.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(ema.module.eval()(x)[0], s.eval()(x), atol=1e-5, rtol=1e-5)
    # .double(): the view follows the teacher's Parameters
    task.double()
    assert all(task.view.params[k] is p and p.dtype == torch.float64 for k, p in t.named_parameters())
    assert task(x.double(), y)["loss"].dtype == torch.float64


def test_forward_traces_as_one_graph_without_host_syncs():
    """torch.compile sees the whole task forward (student, selection, masked teacher, loss) as one graph: no
    data-dependent Python (.item(), torch.equal, range checks) that would sync the device."""
    import torch._dynamo
    s, t = _pair()
    task = MaskedLogitDistillationTask(s, t, num_keep=6, task_loss_weight=0.5, verbose=False)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(task)(_x(), _y())
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_prepare_distributed_wraps_the_student_in_ddp_and_matches_one_process(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    s, t = _pair()
    s2 = copy.deepcopy(s)
    x, y = _x(), _y()
    ref = MaskedLogitDistillationTask(s2, t, num_keep=6, task_loss_weight=0.5, verbose=False)
    want = _grads(s2, ref(x, y)["loss"])
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        task = MaskedLogitDistillationTask(s, t, num_keep=6, task_loss_weight=0.5, verbose=False)
        task.prepare_distributed()
        assert isinstance(task.trainable_module, DDP) and not any(p.requires_grad for p in t.parameters())
        assert task.get_eval_model() is s
        got = _grads(s, task(x, y)["loss"])
    finally:
        dist.destroy_process_group()
    for k, g in want.items():
        torch.testing.assert_close(got[k], g, atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_compiled_task_trains_like_the_eager_task():
    """task.compile() (timm's hook) then three SGD steps on one-block models: the same losses and parameters as the
    eager task (SGD: AdamW's normalised steps would turn rounding-level gradient differences into lr-sized ones)."""
    torch._dynamo.reset()
    runs = {}
    one_block = {**TINY, "depth": 1}
    for compiled in (False, True):
        s, t = _timm("deit_tiny_patch16_224", **one_block), _timm("deit_small_patch16_224", seed=1, **one_block)
        task = MaskedLogitDistillationTask(s, t, num_keep=6, task_loss_weight=0.5, temperature=2.0, verbose=False)
        opt = torch.optim.SGD(task.get_trainable_module().parameters(), lr=0.02, momentum=0.9)
        if compiled:
            eval_model = task.compile()
            assert task.get_eval_model() is eval_model and eval_model._orig_mod is s
        losses = []
        x, y = _x(), _y()
        for i in range(3):
            with torch._dynamo.config.patch(error_on_recompile=i > 0):  # one graph each, compiled once
                out = task(x, y)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
            opt.step()
            losses.append(out["loss"].detach())
        runs[compiled] = (torch.stack(losses), dict(s.named_parameters()))
    (l0, p0), (l1, p1) = runs[False], runs[True]
    assert l0[-1] < l0[0] - 1e-3  # it trains
    torch.testing.assert_close(l1, l0, atol=1e-4, rtol=1e-4)
    for k in p0:
        torch.testing.assert_close(p1[k], p0[k], atol=1e-4, rtol=1e-4)
