"""Teachers named by hub tag, students handed back to timm and transformers (maskedkd/hub.py, maskedkd/export.py).

No network: each test fills a Hugging Face cache folder of its own with generated checkpoints, laid out as
huggingface_hub lays out what it downloads (refs/main -> snapshots/COMMIT/files), and the libraries read it in their
offline mode (HF_HUB_OFFLINE=1, set by conftest)."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import maskedkd as mkd
from maskedkd.experiments import MODELS, TrainConfig
from maskedkd.hub import HubError
from maskedkd.train import run

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_cache(cache: Path, repo_id: str, files: dict) -> None:
    """A hub cache entry as huggingface_hub writes one: files = {name: text or a dict of tensors}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        if isinstance(body, dict):
            save_file({k: v.contiguous() for k, v in body.items()}, snap / name)
        else:
            (snap / name).write_text(body)


def _jitter(params, seed=0):
    g = torch.Generator().manual_seed(seed)  # away from init, so equal logits mean equal weights
    return {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in params.items()}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh Hugging Face cache folder, set where huggingface_hub reads its own setting."""
    from huggingface_hub import constants
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_timm_tag_is_read_from_the_filled_cache(hub):
    """timm:NAME goes through timm.create_model(pretrained=True): its pretrained config gives the architecture and
    the normalisation; mkd.load_checkpoint takes the same name."""
    cfg = mkd.vit_config("deit_tiny_patch16_224")
    params = _jitter(mkd.init_params(cfg))
    fill_cache(hub, "timm/deit_tiny_patch16_224.fb_in1k", {"model.safetensors": params})
    pre = mkd.load_pretrained("timm:deit_tiny_patch16_224.fb_in1k")
    assert pre.cfg == cfg.replace(name="deit_tiny_patch16_224.fb_in1k")
    assert pre.params.keys() == params.keys() and all(torch.equal(pre.params[k], params[k]) for k in params)
    assert pre.norm == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    loaded = mkd.load_checkpoint("timm:deit_tiny_patch16_224.fb_in1k", cfg)
    assert all(torch.equal(loaded[k], params[k]) for k in params)


def test_a_model_missing_from_the_cache_names_itself_and_the_cache(hub):
    with pytest.raises(HubError, match=rf"timm:deit_small_patch16_224\.fb_in1k: could not be read from the hub cache "
                                       rf"{hub}.*HF_HUB_OFFLINE is set"):
        mkd.load_pretrained("timm:deit_small_patch16_224.fb_in1k")
    with pytest.raises(HubError, match=r"hf-hub:nobody/nothing: could not be read"):
        mkd.load_pretrained("hf-hub:nobody/nothing")
    with pytest.raises(HubError, match="names no hub model"):
        mkd.load_pretrained("deit_small.pth")


def test_a_preset_beside_a_hub_teacher_must_describe_it(hub):
    """A template names its teacher's preset (deit_tiny_deit_small_kd: deit_small_patch16_224); a hub teacher given on
    the command line must be that model, or the run refuses, naming the fields that differ."""
    from maskedkd.teachers import load_model
    fill_cache(hub, "timm/deit_tiny_patch16_224.fb_in1k",
               {"model.safetensors": mkd.init_params(mkd.vit_config("deit_tiny_patch16_224"))})
    cpu = torch.device("cpu")
    cfg, _, _ = load_model("timm:deit_tiny_patch16_224.fb_in1k", "deit_tiny_patch16_224", 1000, None, cpu, "teacher")
    assert cfg.name == "deit_tiny_patch16_224.fb_in1k"
    with pytest.raises(ValueError, match=r"is not the teacher_model='deit_small_patch16_224'.*'embed_dim': \(192, 384\)"):
        load_model("timm:deit_tiny_patch16_224.fb_in1k", "deit_small_patch16_224", 1000, None, cpu, "teacher")


TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)


@pytest.fixture
def tiny_rgb_student():
    MODELS["tiny_rgb_student"] = mkd.ViTConfig(name="tiny_rgb_student", img_size=32, patch_size=8, num_classes=3,
                                               embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0)
    yield "tiny_rgb_student"
    MODELS.pop("tiny_rgb_student")


def _folder(root: Path):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 2)):
        for c in range(3):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()).save(d / f"{i}.png")


def test_a_run_names_a_timm_teacher_on_the_hub_and_timm_loads_its_student(hub, tmp_path, tiny_rgb_student):
    """hf-hub:REPO in timm's format (config.json with an architecture): a masked-KD run trains offline from the
    filled cache; its student loads into timm by the card's spec with our logits; the card says what it was."""
    import timm
    t_cfg = mkd.ViTConfig(name="t", num_classes=3, **TINY_VIT, mlp_ratio=4.0)
    t_params = _jitter(mkd.init_params(t_cfg), seed=1)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # not ImageNet's: the run folds the difference in
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 3, "model_args": TINY_VIT,
              "pretrained_cfg": {"input_size": [3, 32, 32], "mean": list(mean), "std": list(std), "num_classes": 3,
                                 "first_conv": "patch_embed.proj", "classifier": "head"}}
    fill_cache(hub, "someone/tiny-vit", {"config.json": json.dumps(config), "model.safetensors": t_params})
    pre = mkd.load_pretrained("hf-hub:someone/tiny-vit")
    assert pre.cfg.replace(name="t") == t_cfg and pre.norm == (mean, std)
    _folder(tmp_path / "data")
    out = tmp_path / "run"
    s = run(TrainConfig(data="imagefolder", data_path=str(tmp_path / "data"), model=tiny_rgb_student, img_size=32,
                        batch_size=4, epochs=1, num_workers=0, compile=False, threads=1, lr=1e-3, drop_path=0.0,
                        teacher="hf-hub:someone/tiny-vit", keep_ratio=0.5, out_dir=str(out), name="hubrun"))
    card = json.loads((out / "student.json").read_text())
    assert s["steps"] == 4 and card["teacher"] == "hf-hub:someone/tiny-vit" and card["kept_patches"] == 8
    assert (card["teacher_patches"], card["final_acc"], card["config_hash"]) == (16, s["final_acc"], s["config_hash"])
    assert card["recipe"]["keep_ratio"] == 0.5 and card["timm"]["model"] == "vit_tiny_patch16_224"
    model = timm.create_model(card["timm"]["model"], **card["timm"]["kwargs"]).eval()
    model.load_state_dict(load_file(out / card["timm"]["file"]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = mkd.forward(load_file(out / "params.safetensors"), x, MODELS[tiny_rgb_student])
        torch.testing.assert_close(model(x), ours, rtol=1e-5, atol=1e-5)
    # the teacher of the run read ImageNet-normalised batches: its folded weights equal the hub model on its own input
    from maskedkd.teachers import IMAGENET_NORM, fold_input_norm
    folded = fold_input_norm(pre.params, IMAGENET_NORM, pre.norm)
    m_d, s_d = (torch.tensor(v)[None, :, None, None] for v in IMAGENET_NORM)
    m_m, s_m = (torch.tensor(v)[None, :, None, None] for v in pre.norm)
    with torch.no_grad():
        torch.testing.assert_close(mkd.forward(folded, x, pre.cfg), mkd.forward(pre.params, (x * s_d + m_d - m_m) / s_m,
                                                                                 pre.cfg), rtol=1e-4, atol=1e-4)


def test_a_run_names_a_timm_tag_as_its_teacher(hub, tmp_path):
    """teacher=timm:NAME in the training program: an ImageNet tag (1000 classes) resampled by timm to the run's 32 px
    (img_size), on a 1000-class folder of tiny images; two steps from the filled cache, offline."""
    from PIL import Image
    cfg = mkd.vit_config("deit_tiny_patch16_224")
    fill_cache(hub, "timm/deit_tiny_patch16_224.fb_in1k", {"model.safetensors": _jitter(mkd.init_params(cfg))})
    for split in ("train", "val"):
        for c in range(1000):
            (tmp_path / "data" / split / f"c{c:03d}").mkdir(parents=True)
            Image.new("RGB", (8, 8), (c % 256, c // 4 % 256, 7)).save(tmp_path / "data" / split / f"c{c:03d}" / "0.png")
    MODELS["tiny_in1k_student"] = mkd.ViTConfig(name="tiny_in1k_student", img_size=32, patch_size=8, num_classes=1000,
                                                embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0)
    try:
        s = run(TrainConfig(data="imagefolder", data_path=str(tmp_path / "data"), model="tiny_in1k_student",
                            img_size=32, batch_size=4, epochs=1, max_steps=2, repeated_aug=1, num_workers=0,
                            compile=False, threads=1, drop_path=0.0, lr=1e-3, keep_ratio=0.5,
                            teacher="timm:deit_tiny_patch16_224.fb_in1k", out_dir=str(tmp_path / "r"), name="tag"))
    finally:
        MODELS.pop("tiny_in1k_student")
    assert s["steps"] == 2 and s["teacher"] == "deit_tiny_patch16_224.fb_in1k" and s["num_keep"] == 2  # of 2x2


def test_a_run_names_an_ast_teacher_on_the_hub_and_transformers_loads_its_student(hub, tmp_path):
    """hf-hub:REPO holding a transformers AST (config.json, model.safetensors under transformers' names,
    preprocessor_config.json): a sound run trains offline with it as teacher; the AST student comes back as a
    transformers folder with our logits."""
    from transformers import ASTForAudioClassification
    t_cfg = MODELS["sounds_teacher"].replace(depth=1, norm_eps=1e-12)
    t_params = _jitter(mkd.init_params(t_cfg), seed=2)
    sd = mkd.export.hf_ast_state_dict(t_params, t_cfg)
    config = mkd.export.hf_ast_config(t_cfg)
    from maskedkd.data.audio import AUDIOSET_MEAN, AUDIOSET_STD
    from maskedkd.data.sounds import SYNTH_MEAN, SYNTH_STD
    fill_cache(hub, "someone/tiny-ast", {"config.json": json.dumps(config), "model.safetensors": sd,
                                         "preprocessor_config.json": json.dumps(  # AudioSet's: not the sound set's
                                             {"mean": AUDIOSET_MEAN, "std": AUDIOSET_STD, "do_normalize": True})})
    pre = mkd.load_pretrained("hf-hub:someone/tiny-ast")
    assert pre.cfg.replace(name="x") == t_cfg.replace(name="x") and pre.norm == ((AUDIOSET_MEAN,), (2 * AUDIOSET_STD,))
    assert all(torch.equal(pre.params[k], t_params[k]) for k in t_params)
    # the run folds the difference into the patch embedding: on the sound set's input the folded teacher gives the
    # hub model's logits on the same fbank normalised as it was trained
    from maskedkd.teachers import data_norm, fold_input_norm
    folded = fold_input_norm(pre.params, data_norm("sounds"), pre.norm)
    x = torch.randn(2, 100, 128)
    fb = x * 2 * SYNTH_STD + SYNTH_MEAN
    with torch.no_grad():
        torch.testing.assert_close(mkd.forward(folded, x, pre.cfg),
                                   mkd.forward(pre.params, (fb - AUDIOSET_MEAN) / (2 * AUDIOSET_STD), pre.cfg),
                                   rtol=1e-4, atol=1e-4)
    fill_cache(hub, "someone/ast-without-preprocessor", {"config.json": json.dumps(config), "model.safetensors": sd})
    with pytest.warns(UserWarning, match="its input normalisation is unknown"):
        assert mkd.load_pretrained("hf-hub:someone/ast-without-preprocessor").norm is None
    out = tmp_path / "run"
    s = run(TrainConfig(data="sounds", model="sounds_student", train_size=32, test_size=16, batch_size=16, epochs=1,
                        compile=False, threads=1, drop_path=0.0, lr=1e-3, teacher="hf-hub:someone/tiny-ast",
                        num_keep=54, out_dir=str(out), name="astrun"))
    card = json.loads((out / "student.json").read_text())
    assert s["steps"] == 2 and card["kept_patches"] == 54 and card["transformers"]["folder"] == "transformers"
    model = ASTForAudioClassification.from_pretrained(out / "transformers").eval()
    x = torch.randn(2, 100, 128)
    with torch.no_grad():
        ours = mkd.forward(load_file(out / "params.safetensors"), x, MODELS["sounds_student"])
        torch.testing.assert_close(model(x).logits, ours, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [
    MODELS["digits_student"],
    mkd.vit_config("deit_tiny_patch16_224", depth=2, img_size=32, num_classes=7),
    mkd.vit_config("deit3_small_patch16_224", depth=2, img_size=32),
    mkd.vit_config("deit_tiny_distilled_patch16_224", depth=2, img_size=32),
    mkd.vit_config("cait_xxs24_224", depth=2, class_attn_depth=1, img_size=32),
    mkd.vit_config("vit_base_patch16_clip_quickgelu_224", depth=1, img_size=32, num_classes=10),
    mkd.MAE_PRESETS["mae_vit_base_patch16"].replace(depth=1, img_size=(32, 32)),
    MODELS["digits_student"].replace(name="digits_student_reg4", reg_tokens=4, num_prefix_tokens=5),
    mkd.vit_config("deit3_small_patch16_224", depth=2, img_size=32).replace(name="deit3_reg2", reg_tokens=2,
                                                                           num_prefix_tokens=3),
], ids=lambda c: c.name)
def test_timm_builds_every_student_family_from_its_spec_with_our_logits(cfg):
    """The minGPT parity test, the other way: our parameters into the timm model timm_spec names, strict keys."""
    import timm
    params = _jitter(mkd.init_params(cfg, seed=3))
    spec = mkd.timm_spec(cfg)
    model = timm.create_model(spec["model"], **spec["kwargs"]).eval()
    model.load_state_dict(params)
    x = torch.randn(2, cfg.in_chans, *cfg.img_size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), mkd.forward(params, x, cfg), rtol=1e-5, atol=2e-5)


def test_configs_timm_cannot_build_by_name_are_refused():
    with pytest.raises(ValueError, match="Audio Spectrogram Transformer"):
        mkd.timm_spec(MODELS["sounds_student"])
    with pytest.raises(ValueError, match="LayerNorm eps 1e-05"):
        mkd.timm_spec(mkd.ViTConfig(norm_eps=1e-5))
    with pytest.raises(ValueError, match="distilled DeiT has no register tokens"):
        mkd.timm_spec(mkd.vit_config("deit_tiny_distilled_patch16_224").replace(reg_tokens=1, num_prefix_tokens=3))
