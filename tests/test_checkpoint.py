"""Checkpoint formats, strict key/shape checks, corrupt files, atomic writes."""
import pytest
import torch
from helpers import timm_model

import maskedkd as mkd

CFG = mkd.vit_config("deit3_small_patch16_224", depth=2, img_size=32, patch_size=8, num_classes=5)


def _sd():
    return {k: v.contiguous() for k, v in timm_model("deit3_small_patch16_224", depth=2, img_size=32,
                                                     patch_size=8, num_classes=5).state_dict().items()}


def _same(params, sd):
    assert set(params) == set(sd) and all(torch.equal(params[k], sd[k]) for k in sd)


def test_official_release_wrapper_and_ddp_prefix(tmp_path):
    sd = _sd()
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "r.pth")
    _same(mkd.load_checkpoint(tmp_path / "r.pth", CFG), sd)


def test_deit3_release_gamma_names():
    sd = _sd()
    release = {k.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v for k, v in sd.items()}
    assert any("gamma_1" in k for k in release)
    _same(mkd.load_checkpoint({"model": release}, CFG), sd)


def test_roundtrip_through_save_params(tmp_path):
    p = mkd.init_params(CFG, seed=3)
    mkd.save_params(p, tmp_path / "sub" / "p.safetensors")
    _same(mkd.load_checkpoint(tmp_path / "sub" / "p.safetensors", CFG), p)
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["p.safetensors"]  # no temp file left


def test_other_architecture_fails_naming_keys():
    other = mkd.vit_config("deit_tiny_patch16_224", depth=3, img_size=32, patch_size=8, num_classes=5)
    with pytest.raises(ValueError) as e:
        mkd.load_checkpoint(mkd.init_params(other), CFG)
    msg = str(e.value)
    assert "blocks.0.ls1.gamma" in msg and "blocks.2.norm1.weight" in msg and "mis-shaped" in msg
    assert "blocks.0.attn.qkv.weight: given (576, 192) vs config (1152, 384)" in msg


def test_missing_key_named():
    sd = _sd()
    del sd["norm.bias"]
    with pytest.raises(ValueError, match=r"missing keys \['norm.bias'\]"):
        mkd.load_checkpoint(sd, CFG)


def test_corrupt_and_missing_files(tmp_path):
    good = tmp_path / "w.pth"
    torch.save(_sd(), good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="could not read checkpoint .*bad.pth"):
        mkd.load_checkpoint(bad, CFG)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="bad.safetensors"):
        mkd.load_checkpoint(tmp_path / "bad.safetensors", CFG)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        mkd.load_checkpoint(tmp_path / "nope.pth", CFG)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_never_executed(tmp_path, capsys):
    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="could not read checkpoint"):
        mkd.load_checkpoint(tmp_path / "evil.pth", CFG)
    assert "pwned" not in capsys.readouterr().out


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from maskedkd.checkpoint import atomic_write
    target = tmp_path / "ck.pt"
    mkd.save_checkpoint({"step": 1}, target)

    def boom(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("killed mid-write")
    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ck.pt"]
