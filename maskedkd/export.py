"""The distilled student back in the ecosystem: timm for ViT students, transformers for AST students.

A run's `params.safetensors` already holds timm's parameter names. `timm_spec(cfg)` names the timm architecture and
the keyword arguments that build the student's exact model, so timm loads that file as it is:

    spec = json.load(open("runs/NAME/student.json"))["timm"]
    model = timm.create_model(spec["model"], **spec["kwargs"])
    model.load_state_dict(safetensors.torch.load_file("runs/NAME/params.safetensors"))

An AST student is written as a transformers folder (`config.json` and `model.safetensors` under transformers' names,
the layout the published AST checkpoints use): `ASTForAudioClassification.from_pretrained("runs/NAME/transformers")`.
Neither library is needed to write them; tests/test_hub.py loads both and compares their logits with ours.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import ast
from .attention import Params
from .checkpoint import atomic_write, save_params
from .config import ViTConfig
from .model import check_params


def timm_spec(cfg: ViTConfig) -> dict:
    """{"model": a timm architecture name, "kwargs": what timm.create_model needs besides it} for the model cfg
    describes; raises for a config timm cannot build by name (an AST, a LayerNorm eps other than the family's)."""
    if cfg.input_layout != "bchw":
        raise ValueError(f"{cfg.name!r} is an Audio Spectrogram Transformer: export it with hf_ast_files")
    kw = dict(img_size=list(cfg.img_size), patch_size=cfg.patch_size, in_chans=cfg.in_chans,
              num_classes=cfg.num_classes, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
              mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias)
    eps = 1e-5 if cfg.pre_norm else 1e-6  # timm's LayerNorm eps of these families (CLIP towers: 1e-5)
    if cfg.norm_eps != eps:
        raise ValueError(f"{cfg.name!r} has LayerNorm eps {cfg.norm_eps}; timm builds this family with {eps}")
    if cfg.reg_tokens and cfg.head == "token_dist":
        raise ValueError(f"{cfg.name!r}: timm's distilled DeiT has no register tokens (reg_tokens={cfg.reg_tokens})")
    if cfg.reg_tokens:
        kw["reg_tokens"] = cfg.reg_tokens
    if cfg.family == "cait":
        return {"model": "cait_xxs24_224", "kwargs": {**kw, "depth_token_only": cfg.class_attn_depth,
                                                      "init_values": cfg.layer_scale}}
    if cfg.pre_norm:
        name = "vit_base_patch16_clip_quickgelu_224" if cfg.act == "quick_gelu" else "vit_base_patch16_clip_224"
        return {"model": name, "kwargs": kw}
    if cfg.act != "gelu":
        raise ValueError(f"{cfg.name!r}: act={cfg.act!r} outside a CLIP tower is not a timm preset")
    if cfg.layer_scale is not None:
        kw["init_values"] = cfg.layer_scale
    if not cfg.pos_embed_prefix:
        kw["no_embed_class"] = True
    if cfg.head == "avg":
        kw["global_pool"] = "avg"
    name = "deit_tiny_distilled_patch16_224" if cfg.head == "token_dist" else "vit_tiny_patch16_224"
    return {"model": name, "kwargs": kw}


# transformers' AST names as its published checkpoints hold them (transformers 4.x; 5.x writes them back too): the
# inverse of the reading tables in maskedkd.ast (whose in-layer table also knows 5.x names, listed after 4.x's)
_AST_TOP = {ours: theirs for theirs, ours in ast._TOP.items()}
_AST_BLOCK = {}
for _theirs, _ours in ast._IN_LAYER.items():
    _AST_BLOCK.setdefault(_ours, _theirs)  # the first (4.x) name of each part


def hf_ast_state_dict(params: Params, cfg: ViTConfig) -> dict[str, torch.Tensor]:
    """AST params (timm names) -> transformers' ASTForAudioClassification state dict (q, k, v split), the inverse of
    ast.convert_hf_ast."""
    check_params(params, cfg, "the AST's params")
    out = {}
    for k, v in params.items():
        if k in _AST_TOP:
            out[_AST_TOP[k]] = v
            continue
        _, i, rest = k.split(".", 2)
        part, kind = rest.rsplit(".", 1)
        stem = f"encoder.layer.{i}"
        if part == "attn.qkv":
            for name, t in zip("qkv", v.chunk(3, dim=0)):
                out[f"{stem}.{_AST_BLOCK[name]}.{kind}"] = t
        else:
            out[f"{stem}.{_AST_BLOCK[part]}.{kind}"] = v
    return {f"audio_spectrogram_transformer.{k}" if not k.startswith("classifier.") else k: v.detach().contiguous()
            for k, v in out.items()}


def hf_ast_config(cfg: ViTConfig) -> dict:
    """transformers' ASTConfig fields of an AST config (the config.json of its folder)."""
    if cfg.input_layout != "btf" or cfg.head != "prefix_mean" or cfg.act != "gelu" or cfg.reg_tokens:
        raise ValueError(f"{cfg.name!r} is not an Audio Spectrogram Transformer (without register tokens)")
    (bins, frames), (fs, ts) = cfg.img_size, cfg.stride
    return {"architectures": ["ASTForAudioClassification"], "model_type": "audio-spectrogram-transformer",
            "hidden_size": cfg.embed_dim, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.num_heads,
            "intermediate_size": cfg.mlp_hidden, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02, "layer_norm_eps": cfg.norm_eps,
            "patch_size": cfg.patch_size, "qkv_bias": cfg.qkv_bias, "frequency_stride": fs, "time_stride": ts,
            "max_length": frames, "num_mel_bins": bins,
            "id2label": {str(i): f"LABEL_{i}" for i in range(cfg.num_classes)},
            "label2id": {f"LABEL_{i}": i for i in range(cfg.num_classes)}}


def hf_ast_files(params: Params, cfg: ViTConfig, folder: str | Path) -> Path:
    """Write an AST as a transformers folder (config.json, model.safetensors), each file atomically."""
    from safetensors.torch import save_file
    folder = Path(folder)
    sd = {k: v.cpu() for k, v in hf_ast_state_dict(params, cfg).items()}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(sd, tmp, metadata={"format": "pt"}))
    text = json.dumps(hf_ast_config(cfg), indent=1)
    atomic_write(folder / "config.json", lambda tmp: Path(tmp).write_text(text))
    return folder


def write_student(params: Params, cfg: ViTConfig, out: str | Path, card: dict) -> dict:
    """The finished student in `out`: params.safetensors (timm names), for an AST student a transformers folder
    `out/transformers`, and the card `out/student.json`: `card` (teacher, kept patches, recipe, accuracy, hash) plus
    how to load it (`timm` or `transformers`) and the student's config."""
    import dataclasses
    out = Path(out)
    save_params(params, out / "params.safetensors", metadata={"config_hash": str(card.get("config_hash", ""))})
    card = {**card, "student_config": dataclasses.asdict(cfg)}
    if cfg.input_layout == "btf":
        hf_ast_files(params, cfg, out / "transformers")
        card["transformers"] = {"class": "ASTForAudioClassification", "folder": "transformers"}
    else:
        try:
            card["timm"] = {**timm_spec(cfg), "file": "params.safetensors"}
        except ValueError as e:
            card["timm"] = {"unavailable": str(e)}
    text = json.dumps(card, indent=1)
    atomic_write(out / "student.json", lambda tmp: Path(tmp).write_text(text))
    return card
