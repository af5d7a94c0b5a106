"""The functional train step: compiled == eager, one graph, masking-only differences, learning."""
import pytest
import torch

import maskedkd as mkd
from maskedkd import TeacherView
from maskedkd.optim import cosine_lr, make_optimizer
from maskedkd.step import make_loss_fn, make_train_step

S = mkd.ViTConfig(img_size=16, patch_size=4, in_chans=1, num_classes=5, embed_dim=32, depth=2, num_heads=2)
T = S.replace(embed_dim=48, depth=2, num_heads=3)


def _batch(seed=0, b=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 16, 16, generator=g), torch.randint(0, 5, (b,), generator=g)


def _teacher():
    p = mkd.init_params(T, seed=7)
    return {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in p.items()}


@pytest.mark.parametrize("criterion", ["topk", pytest.param("topk_flat_last", marks=pytest.mark.slow)])
def test_compiled_equals_eager_for_two_steps_with_one_graph(criterion):
    """Tolerance: 1e-4 on parameters after two AdamW steps (inductor reorders fp32 reductions). topk_flat_last: the
    patches' spread is computed inside the compiled step, in the same graph."""
    teacher = _teacher()
    results = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        params = mkd.init_params(S, seed=0)
        opt = make_optimizer(params, lr=1e-2)
        step = make_train_step(S, view=TeacherView(T, teacher, 8, criterion=criterion), compile=compiled)
        ms = [step(params, opt, *_batch(0))]
        with torch._dynamo.config.patch(error_on_recompile=True):  # new data and lr: still the same graph
            opt.param_groups[0]["lr"] = 5e-3
            ms.append(step(params, opt, *_batch(1)))
        results[compiled] = (params, ms)
    (pe, me), (pc, mc) = results[False], results[True]
    for k in pe:
        torch.testing.assert_close(pc[k], pe[k], atol=1e-4, rtol=1e-4)
    for a, b in zip(me, mc):
        assert set(a) == set(b) == {"loss", "ce", "kd", "student_acc", "kept_tokens", "agreement", "teacher_acc", "feat"}
        torch.testing.assert_close(a["loss"], b["loss"], atol=1e-5, rtol=1e-5)
    assert float(me[0]["kept_tokens"]) == 8
    assert not torch.equal(pe["head.weight"], mkd.init_params(S, seed=0)["head.weight"])


def test_keep_all_equals_vanilla_kd_and_masking_changes_it():
    teacher, params = _teacher(), mkd.init_params(S, seed=0)
    x, y = _batch()
    vanilla, _ = make_loss_fn(S, view=TeacherView(T, teacher, None))(params, x, y)
    keep_all, _ = make_loss_fn(S, view=TeacherView(T, teacher, S.num_patches))(params, x, y)
    masked, _ = make_loss_fn(S, view=TeacherView(T, teacher, 4))(params, x, y)
    torch.testing.assert_close(keep_all, vanilla, atol=1e-6, rtol=1e-5)
    assert abs(float(masked - vanilla)) > 1e-4


def test_no_kd_is_plain_cross_entropy():
    params = mkd.init_params(S, seed=0)
    x, y = _batch()
    loss, m = make_loss_fn(S)(params, x, y)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(mkd.forward(params, x, S), y))
    assert float(m["kd"]) == 0 and "teacher_acc" not in m


def test_steps_reduce_the_loss_and_leave_the_teacher_alone():
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.items()}
    params = mkd.init_params(S, seed=0)
    opt = make_optimizer(params, lr=3e-3)
    step = make_train_step(S, view=TeacherView(T, teacher, 8), compile=False, drop_path=0.1)
    x, y = _batch(3, b=16)
    losses = [float(step(params, opt, x, y)["loss"]) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]
    assert all(torch.equal(before[k], teacher[k]) for k in teacher)


def test_step_rejects_inconsistent_setups():
    with pytest.raises(ValueError, match="num_keep=17 must lie in \\[1, 16\\]"):
        make_loss_fn(S, view=TeacherView(T, _teacher(), 17))
    with pytest.raises(ValueError, match="teacher has 7 classes, student 5"):
        make_loss_fn(S, view=TeacherView(T.replace(num_classes=7), mkd.init_params(T.replace(num_classes=7)), None))
    with pytest.raises(TypeError, match="num_keep"):  # a kept count belongs to a TeacherView
        make_loss_fn(S, num_keep=4)


def test_cosine_schedule_and_weight_decay_groups():
    kw = dict(total_steps=100, warmup_steps=10, base_lr=1e-3, min_lr=1e-5, warmup_lr=1e-6)
    assert cosine_lr(0, **kw) == pytest.approx(1e-6)
    assert cosine_lr(10, **kw) == pytest.approx(1e-3)
    assert cosine_lr(55, **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert cosine_lr(100, **kw) == pytest.approx(1e-5)
    opt = make_optimizer(mkd.init_params(S), lr=1e-3, weight_decay=0.05)
    decay, rest = opt.param_groups
    assert decay["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and len(decay["params"]) == 2 * 4 + 1 + 1  # 4 mats/block


def test_scorers_rank_by_the_named_model():
    """scorer="teacher" / a fixed model: the kept patches are the top-k of that model's own CLS attention."""
    teacher, params = _teacher(), mkd.init_params(S, seed=0)
    fixed = (S, mkd.init_params(S, seed=3))
    x, _ = _batch()
    _, s_student = mkd.student_forward(params, x, S)
    for scorer, (cfg, p) in (("student", (S, params)), ("teacher", (T, teacher)), (fixed, fixed)):
        out = mkd.TeacherView(T, teacher, 5, scorer=scorer)(x, s_student)
        want = torch.topk(mkd.student_forward(p, x, cfg)[1], 5).indices
        assert torch.equal(out.keep_idx.sort(-1).values, want.sort(-1).values)
        torch.testing.assert_close(out.logits, mkd.teacher_forward(teacher, x, T, out.keep_idx))
    assert mkd.TeacherView(T, teacher)(x, s_student).keep_idx is None
    with pytest.raises(ValueError, match="scorer='dino'"):
        mkd.TeacherView(T, teacher, 5, scorer="dino")


def test_student_masking_ablation_trains_the_student_on_kept_patches():
    """student_keep=k: the student's logits come from k random patches, the teacher sees everything."""
    teacher, params = _teacher(), mkd.init_params(S, seed=0)
    x, y = _batch()
    torch.manual_seed(0)
    loss, m = make_loss_fn(S, view=TeacherView(T, teacher, None), student_keep=6)(params, x, y)
    torch.manual_seed(0)
    keep = mkd.select_tokens(torch.empty(8, 16), 6, "random")
    want = mkd.kd_loss(mkd.teacher_forward(params, x, S, keep), mkd.teacher_forward(teacher, x, T), y)
    torch.testing.assert_close(loss, want)
    assert float(m["student_kept_tokens"]) == 6 and float(m["kept_tokens"]) == 16
    with pytest.raises(ValueError, match="not both"):
        make_loss_fn(S, view=TeacherView(T, teacher, 4), student_keep=6)


@pytest.mark.parametrize("kind", ["manifold", "attention"])
def test_feature_kd_on_kept_patches(kind):
    """The feature term compares the student's features at the teacher's kept indices with the teacher's."""
    from maskedkd.losses import attention_loss, manifold_loss
    from maskedkd.model import forward_tokens
    teacher, params = _teacher(), mkd.init_params(S, seed=0)
    x, y = _batch()
    loss, m = make_loss_fn(S, view=TeacherView(T, teacher, 6), kind=kind, feature_weight=2.0)(params, x, y)
    s_tok, s_sc = forward_tokens(params, x, S, want_scores=True)
    keep = mkd.select_tokens(s_sc, 6)
    t_tok, t_sc = forward_tokens(teacher, x, T, keep, want_scores=True)
    if kind == "manifold":
        feat = manifold_loss(mkd.gather_patches(s_tok[:, 1:], keep), t_tok[:, 1:])
    else:
        feat = attention_loss(torch.gather(s_sc, 1, keep), t_sc)
    torch.testing.assert_close(m["feat"], feat)
    logit_kd = mkd.kd_loss(mkd.forward(params, x, S), mkd.teacher_forward(teacher, x, T, keep), y)
    torch.testing.assert_close(loss, logit_kd + 0.5 * 2.0 * feat, atol=1e-5, rtol=1e-5)
    assert float(feat) > 0


def test_adaptive_budget_step_reports_mean_kept_and_matches_manual():
    from maskedkd.model import forward_tokens, head
    from maskedkd.select import adaptive_budget
    teacher, params = _teacher(), mkd.init_params(S, seed=0)
    x, y = _batch()
    loss, m = make_loss_fn(S, view=mkd.TeacherView(T, teacher, 12, adaptive_mass=0.5))(params, x, y)
    logits, scores = mkd.student_forward(params, x, S)
    idx, valid, count = adaptive_budget(scores, 0.5, 12)
    t_logits = head(teacher, forward_tokens(teacher, x, T, idx, keep_valid=valid)[0], T)
    torch.testing.assert_close(loss, mkd.kd_loss(logits, t_logits, y))
    torch.testing.assert_close(m["kept_tokens"], count.float().mean())
    with pytest.raises(ValueError, match="adaptive_mass=0.5 needs a fixed num_keep"):
        mkd.TeacherView(T, teacher, adaptive_mass=0.5)


def test_view_is_the_one_teacher_path_of_loss_and_evaluation():
    """make_loss_fn(num_keep=k) and make_loss_fn(view=TeacherView(..., k)) are the same function; the view called
    alone gives the logits the loss distils from."""
    teacher, params = _teacher(), mkd.init_params(S, seed=0)
    x, y = _batch()
    a = make_loss_fn(S, view=TeacherView(T, teacher, 6))(params, x, y)
    b = make_loss_fn(S, view=mkd.TeacherView(T, teacher, 6))(params, x, y)
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
    logits, scores = mkd.student_forward(params, x, S)
    t = mkd.TeacherView(T, teacher, 6)(x, scores)
    torch.testing.assert_close(a[0], mkd.kd_loss(logits, t.logits, y))
    with pytest.raises(TypeError, match="view must be a TeacherView"):  # the view is the one way to pass a teacher
        make_loss_fn(S, view=(T, teacher))


@pytest.mark.parametrize("kind", ["manifold", "attention"])
def test_feature_kd_with_tome_or_adaptive_raises(kind):
    """The bug this guards: feature KD with a ToMe teacher ran the full, unmerged teacher, and with an adaptive
    budget showed the teacher the top num_keep patches while kept_tokens reported the adaptive count."""
    teacher = _teacher()
    with pytest.raises(ValueError, match=f"kind='{kind}' needs .* mode 'tome'"):
        make_loss_fn(S, view=mkd.TeacherView(T, teacher, tome_r=2), kind=kind)
    with pytest.raises(ValueError, match=f"kind='{kind}' needs .* mode 'adaptive'"):
        make_loss_fn(S, view=mkd.TeacherView(T, teacher, 8, adaptive_mass=0.5), kind=kind)


def test_view_refuses_options_it_would_ignore():
    teacher = _teacher()
    for kw, msg in [(dict(num_keep=4, tome_r=2), "cannot combine with {'num_keep': 4}"),
                    (dict(tome_r=2, criterion="random"), "cannot combine with {'criterion': 'random'}"),
                    (dict(num_keep=4, adaptive_mass=0.5, criterion="random"), "criterion='random'"),
                    (dict(criterion="random"), "with num_keep=None the teacher sees every patch"),
                    (dict(num_keep=17), r"num_keep=17 must lie in \[1, 16\]"),
                    (dict(num_keep=4, criterion="nope"), "unknown criterion 'nope'"),
                    (dict(num_keep=4, adaptive_mass=1.5), "adaptive_mass=1.5"),
                    (dict(tome_r=-1), "tome_r=-1")]:
        with pytest.raises(ValueError, match=msg):
            mkd.TeacherView(T, teacher, **kw)
    with pytest.raises(ValueError, match="adaptive_mass needs the student on the teacher's patch grid"):
        mkd.TeacherView(T.replace(img_size=32), mkd.init_params(T.replace(img_size=32)), 8,
                        adaptive_mass=0.5).for_student(S)


def test_distilled_token_student_is_refused():
    D = S.replace(num_prefix_tokens=2, head="token_dist")
    with pytest.raises(ValueError, match="distillation token"):
        make_loss_fn(D, view=TeacherView(T, _teacher(), 4))


@pytest.mark.slow
def test_compiled_step_accepts_parameters_that_require_grad():
    """The bug this guards: a compiled step over tensors with requires_grad=True (as dict(module.named_parameters())
    gives) failed on CPU in the fused-attention backward. The step differentiates detached copies."""
    torch._dynamo.reset()
    teacher = _teacher()
    x, y = _batch()
    ref = mkd.init_params(S, seed=0)
    params = {k: v.clone().requires_grad_(True) for k, v in ref.items()}
    step = make_train_step(S, view=TeacherView(T, teacher, 8), compile=True)
    eager = make_train_step(S, view=TeacherView(T, teacher, 8), compile=False)
    m = step(params, make_optimizer(params, lr=1e-2), x, y)
    m_ref = eager(ref, make_optimizer(ref, lr=1e-2), x, y)
    torch.testing.assert_close(m["loss"], m_ref["loss"], atol=1e-5, rtol=1e-5)
    for k in ref:
        torch.testing.assert_close(params[k].detach(), ref[k], atol=1e-4, rtol=1e-4)


def test_integer_images_are_refused_naming_the_dtype():
    params = mkd.init_params(S)
    with pytest.raises(ValueError, match="torch.uint8 is not a floating-point type"):
        mkd.forward(params, torch.zeros(2, 1, 16, 16, dtype=torch.uint8), S)


def test_clip_teacher_reads_imagenet_normalised_input_through_a_folded_patch_embedding():
    """A CLIP teacher expects OpenAI's mean/std; folding the re-normalisation into its patch embedding gives on the
    ImageNet-normalised batch exactly the logits it gives on the CLIP-normalised batch."""
    from maskedkd.teachers import CLIP_NORM, IMAGENET_NORM, fold_input_norm, input_norm
    cfg = mkd.vit_config("vit_base_patch16_clip_224", img_size=32, depth=1, embed_dim=32, num_heads=2,
                         num_classes=5)
    assert input_norm(cfg) == CLIP_NORM and input_norm(T) == IMAGENET_NORM
    params = mkd.init_params(cfg, seed=0)
    img = torch.rand(2, 3, 32, 32)
    norm = lambda x, n: (x - torch.tensor(n[0])[:, None, None]) / torch.tensor(n[1])[:, None, None]  # noqa: E731
    want = mkd.forward(params, norm(img, CLIP_NORM), cfg)
    got = mkd.forward(fold_input_norm(params, IMAGENET_NORM, CLIP_NORM), norm(img, IMAGENET_NORM), cfg)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert fold_input_norm(params, IMAGENET_NORM, IMAGENET_NORM) is params


def test_every_count_of_a_keep_schedule_stays_compiled():
    """The bug this guards: a linear keep schedule asks for one graph per distinct kept count, all steps share
    one code object, and Dynamo stopped compiling after 8 (the rest ran eager, in silence). 10 counts, 10 graphs."""
    from torch._dynamo.utils import counters

    from maskedkd.precision import allow_compiled_graphs
    teacher, x, y = _teacher(), *_batch()
    counts = mkd.keep_schedule("10:70", 16, 10)
    assert len(set(counts)) == 10
    old = torch._dynamo.config.recompile_limit, torch._dynamo.config.fail_on_recompile_limit_hit
    try:
        torch._dynamo.reset()
        counters.clear()
        allow_compiled_graphs(len(set(counts)))
        for k in counts:
            params = mkd.init_params(S, seed=0)
            make_train_step(S, view=TeacherView(T, teacher, k), compile="eager")(params, make_optimizer(params, lr=1e-3), x, y)
        assert counters["stats"]["unique_graphs"] == 10
    finally:
        torch._dynamo.config.recompile_limit, torch._dynamo.config.fail_on_recompile_limit_hit = old
        torch._dynamo.reset()


def test_teacher_matmul_weights_cast_once_give_the_same_outputs_under_autocast():
    """Casting a teacher's matmul weights to bf16 once gives, under bf16 autocast, bit-identical logits and kept
    patches to fp32 weights that autocast casts at every call (on the CPU here; the same rule on CUDA)."""
    from maskedkd.precision import cast_matmul_weights
    teacher, params = _teacher(), mkd.init_params(S, seed=0)
    x, y = _batch()
    cast = cast_matmul_weights(teacher)
    assert cast["blocks.0.attn.qkv.weight"].dtype == torch.bfloat16 and cast["pos_embed"].dtype == torch.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, scores = mkd.student_forward(params, x, S)
        a = mkd.TeacherView(T, teacher, 6)(x, scores)
        b = mkd.TeacherView(T, cast, 6)(x, scores)
    assert torch.equal(a.keep_idx, b.keep_idx) and torch.equal(a.logits, b.logits)
    la = make_loss_fn(S, view=TeacherView(T, teacher, 6), precision="bf16")(params, x, y)[0]
    lb = make_loss_fn(S, view=TeacherView(T, cast, 6), precision="bf16")(params, x, y)[0]
    assert torch.equal(la, lb)
