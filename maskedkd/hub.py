"""Teachers named by their hub tag, read through timm's and huggingface_hub's own download and cache.

    pre = mkd.load_pretrained("timm:deit3_base_patch16_224.fb_in22k_ft_in1k")    # timm's pretrained tag
    pre = mkd.load_pretrained("hf-hub:MIT/ast-finetuned-audioset-10-10-0.4593")   # an AST on the Hugging Face Hub
    pre.cfg, pre.params, pre.norm        # our config (from the model's own pretrained config), timm-named tensors,
                                         # the input normalisation the model was trained with
    params = mkd.load_checkpoint("timm:deit_small_patch16_224.fb_in1k", cfg)    # the same names, checked against cfg

- `timm:NAME`: `timm.create_model(NAME, pretrained=True)` (timm downloads into the Hugging Face cache), then
  `config_from_timm` reads the module into a config: image and patch size, classes, every architectural option;
  the normalisation is the tag's `pretrained_cfg` mean and std.
- `hf-hub:REPO`: the repository's `config.json` says what it holds: timm's format (`architecture`) goes through
  timm as above; a transformers Audio Spectrogram Transformer (`model_type: audio-spectrogram-transformer`) is read
  from its weights file (`model.safetensors`, else `pytorch_model.bin`, `weights_only=True`) with the AST converter
  (maskedkd.ast), its config from `config.json` and its normalisation from `preprocessor_config.json` (mean and
  std of the fbank, in the AST convention `(x - mean) / (2 std)`).

Nothing is downloaded unless a user names a model. Offline (`HF_HUB_OFFLINE=1`, or no network) a model that is not in
the cache raises, naming it and the cache folder. The cache is the libraries' own (huggingface_hub's
`constants.HF_HUB_CACHE`: `HF_HUB_CACHE`, `HF_HOME/hub`, `XDG_CACHE_HOME`, ...), unless a caller passes `cache_dir`.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint
from .ast import ast_config
from .attention import Params
from .config import ViTConfig

PREFIXES = ("timm:", "hf-hub:")
Norm = tuple[tuple[float, ...], tuple[float, ...]]


def is_hub_name(ref) -> bool:
    """Whether ref names a model on a hub (timm:NAME, hf-hub:REPO) rather than a file."""
    return isinstance(ref, str) and ref.startswith(PREFIXES)


def hub_cache() -> Path:
    """The Hugging Face cache the libraries read and fill (huggingface_hub's own setting, looked up now)."""
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class Pretrained:
    """A model read from a hub: our config, its parameters (timm names), the input normalisation it was trained with
    ((mean per channel), (std per channel)) or None where the hub does not say, and the name it was read by."""
    cfg: ViTConfig
    params: Params = field(repr=False)
    norm: Norm | None
    name: str


class HubError(ValueError):
    """A named model that could not be read: not in the cache offline, unknown, or of a kind we do not read."""


def _fetch(name: str, what, cache: Path):
    """what() -> its value; a failure to find or download the model becomes a HubError naming it and the cache."""
    try:
        return what()
    except (OSError, RuntimeError) as e:  # LocalEntryNotFoundError is an OSError; timm's unknown model a RuntimeError
        if isinstance(e, RuntimeError) and not str(e).startswith("Unknown model"):
            raise  # a model that was found but does not load is no cache miss
        from huggingface_hub import constants
        offline = constants.is_offline_mode()
        raise HubError(f"{name}: could not be read from the hub cache {cache}{' (HF_HUB_OFFLINE is set)' * offline}: "
                       f"{type(e).__name__}: {str(e)[:300]}. Run once with network access to fill the cache, or point "
                       f"HF_HUB_CACHE at a cache that holds it") from e


def _download(repo: str, filename: str, cache: Path | None, name: str) -> Path:
    from huggingface_hub import hf_hub_download
    return Path(_fetch(name, lambda: hf_hub_download(repo, filename, cache_dir=cache and str(cache)),
                       cache or hub_cache()))


def _timm(model_name: str, name: str, img_size: int | None, cache: Path | None) -> Pretrained:
    try:
        import timm
    except ImportError as e:
        raise HubError(f"{name} is a timm model: pip install timm") from e
    from .from_timm import config_from_timm
    kw = {} if img_size is None else {"img_size": img_size}  # timm resamples the position embedding to it
    if cache is not None:
        kw["cache_dir"] = str(cache)
    model = _fetch(name, lambda: timm.create_model(model_name, pretrained=True, **kw), cache or hub_cache())
    cfg = config_from_timm(model)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    pc = getattr(model, "pretrained_cfg", {}) or {}
    norm = (tuple(pc["mean"]), tuple(pc["std"])) if "mean" in pc and "std" in pc else None
    return Pretrained(cfg.replace(name=model_name.removeprefix("hf-hub:")), params, norm, name)


def _hf_ast(repo: str, name: str, config: dict, cache: Path | None) -> Pretrained:
    if config.get("hidden_act", "gelu") != "gelu" or not config.get("qkv_bias", True):
        raise HubError(f"{name}: an AST with hidden_act={config.get('hidden_act')!r}, "
                       f"qkv_bias={config.get('qkv_bias')!r}; maskedkd reads GELU with qkv bias")
    classes = len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 527)
    cfg = ast_config(max_length=config["max_length"], num_mel_bins=config["num_mel_bins"],
                     patch_size=config["patch_size"], frequency_stride=config["frequency_stride"],
                     time_stride=config["time_stride"], embed_dim=config["hidden_size"],
                     depth=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
                     mlp_ratio=config["intermediate_size"] / config["hidden_size"], num_classes=classes,
                     norm_eps=config.get("layer_norm_eps", 1e-12)).replace(name=repo)
    try:
        weights = _download(repo, "model.safetensors", cache, name)
    except HubError as first:
        try:
            weights = _download(repo, "pytorch_model.bin", cache, name)
        except HubError as second:
            raise HubError(f"{name}: neither model.safetensors nor pytorch_model.bin could be read ({first}; "
                           f"{second})") from second
    params = checkpoint.load_checkpoint(weights, cfg, source=f"{name} ({weights})")
    norm = None
    try:
        pre = json.loads(_download(repo, "preprocessor_config.json", cache, name).read_text())
    except HubError as e:  # the repository may hold none, or the cache may lack it: say so, do not guess
        warnings.warn(f"{name}: no preprocessor_config.json ({str(e)[:200]}): its input normalisation is unknown, so "
                      f"a run feeds it the data's own normalisation unchanged")
    else:
        if pre.get("do_normalize", True) and "mean" in pre and "std" in pre:
            norm = ((float(pre["mean"]),), (2 * float(pre["std"]),))  # AST: (fbank - mean) / (2 std)
    return Pretrained(cfg, params, norm, name)


def load_pretrained(name: str, *, img_size: int | None = None, cache_dir: str | os.PathLike | None = None
                    ) -> Pretrained:
    """A model named `timm:NAME` or `hf-hub:REPO` -> Pretrained(cfg, params, norm, name), read through the libraries'
    own download and cache (cache_dir: another cache folder; default: the libraries' own, hub_cache()). img_size (timm models) resamples
    the position embedding to another input size, as timm.create_model(img_size=) does."""
    if not is_hub_name(name):
        raise HubError(f"{name!r} names no hub model: expected timm:NAME (a timm pretrained tag) or hf-hub:REPO")
    cache = Path(cache_dir) if cache_dir else None  # None: the libraries' own cache
    if name.startswith("timm:"):
        return _timm(name[len("timm:"):], name, img_size, cache)
    repo = name[len("hf-hub:"):]
    config = json.loads(_download(repo, "config.json", cache, name).read_text())
    if config.get("model_type") == "audio-spectrogram-transformer":
        return _hf_ast(repo, name, config, cache)
    if "architecture" in config:  # timm's hub format
        return _timm(name, name, img_size, cache)
    raise HubError(f"{name}: its config.json is neither timm's (an 'architecture' key) nor an Audio Spectrogram "
                   f"Transformer's (model_type 'audio-spectrogram-transformer'); keys: {sorted(config)[:12]}")


def _state_dict(name: str) -> dict[str, torch.Tensor]:
    return load_pretrained(name).params


for _prefix in PREFIXES:  # mkd.load_checkpoint("timm:NAME", cfg) reads through load_pretrained
    checkpoint.RESOLVERS[_prefix] = _state_dict
