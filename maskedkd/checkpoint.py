"""Load weights from local files (timm, official DeiT / DeiT-III releases, safetensors) and save atomically.

Nothing here touches the network, and nothing unpickles code: `.pth` files go through
`torch.load(weights_only=True)`. Every key and shape is checked against the config; a file for another
architecture fails with the missing, unexpected and mis-shaped keys named.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .attention import Params
from .config import ViTConfig
from .model import check_params, param_shapes

# Official DeiT-III release names -> timm names (timm's deit3 checkpoint filter does the same renames).
_RENAMES = [(re.compile(r"^blocks\.(\d+)\.gamma_1$"), r"blocks.\1.ls1.gamma"),
            (re.compile(r"^blocks\.(\d+)\.gamma_2$"), r"blocks.\1.ls2.gamma")]
_WRAPPERS = ("model", "state_dict", "params", "model_ema")


# Name prefix -> the state dict of a model named on a hub ("timm:NAME", "hf-hub:REPO"); maskedkd.hub fills it, so
# load_checkpoint takes those names as it takes a file.
RESOLVERS: dict[str, Callable[[str], dict[str, torch.Tensor]]] = {}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a local .safetensors / .pth / .pt / .bin file, unwrapped from {"model": ...} style dicts; a hub name
    (RESOLVERS: "timm:NAME", "hf-hub:REPO") is read through its hub's library."""
    if isinstance(path, str) and path.startswith(tuple(RESOLVERS)):
        return RESOLVERS[next(p for p in RESOLVERS if path.startswith(p))](path)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj: Any = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or a pickle that needs code execution
        raise ValueError(f"could not read checkpoint {path}: {type(e).__name__}: {e}") from e
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: Any, source: str = "state dict") -> dict[str, torch.Tensor]:
    """Strip the wrappers official releases use ({"model": sd}, {"state_dict": sd}) and DDP's "module."."""
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise ValueError(f"{source}: no tensors found; top-level keys are {sorted(obj)[:20]}")
        obj = inner
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def rename_keys(sd: dict[str, torch.Tensor], rules=_RENAMES) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pat, rep in rules:
            k = pat.sub(rep, k)
        out[k] = v
    return out


def match_params(sd: dict[str, torch.Tensor], cfg: ViTConfig, *, dtype: torch.dtype = torch.float32,
                 source: str = "checkpoint") -> Params:
    """Check sd against cfg's parameter names and shapes exactly (model.check_params); raise ValueError naming the
    source and every mismatch."""
    check_params(sd, cfg, source)
    return {k: sd[k].detach().to(dtype).clone() for k in param_shapes(cfg)}


Converter = Callable[[dict[str, torch.Tensor], ViTConfig], dict[str, torch.Tensor]]
CONVERTERS: list[Converter] = []  # tried in turn for layouts other than timm's (e.g. Hugging Face AST)


def load_checkpoint(path_or_state_dict, cfg: ViTConfig, *, dtype: torch.dtype = torch.float32,
                    source: str | None = None) -> Params:
    """A local checkpoint file, a hub name (`timm:NAME`, `hf-hub:REPO`: maskedkd.hub) or a state dict -> params for cfg. Reads timm state dicts (.pth, .safetensors),
    the official DeiT release ({"model": sd}) and DeiT-III (timm names or the release's gamma_1/gamma_2), CaiT
    (timm names, = the official S24_224.pth release inside {"model": sd}) and timm's CLIP ViT-B/16 files."""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = source or f"checkpoint {path_or_state_dict}"
        sd = read_state_dict(path_or_state_dict)
    else:
        source = source or "state dict"
        sd = unwrap_state_dict(path_or_state_dict)
    if cfg.family == "vit":  # CaiT's own names are blocks.i.gamma_1 / gamma_2: never rename those
        sd = rename_keys(sd)
    for convert in CONVERTERS:
        sd = convert(sd, cfg)
    return match_params(sd, cfg, dtype=dtype, source=source)


# A fine-tuning run's starting weights (TrainConfig.init): the parameters a pre-trained file may lack, each drawn as
# MAE / G2SD initialise it, and the file's parameters the fine-tuning model drops.
FRESH_KEYS = {  # name -> (init, std)
    "head.weight": ("trunc_normal", 2e-5),  # MAE main_finetune.py: trunc_normal_(model.head.weight, std=2e-5)
    "head.bias": ("zeros", 0.0),  # timm's Linear init in MAE's models_vit.py
    "fc_norm.weight": ("ones", 0.0), "fc_norm.bias": ("zeros", 0.0),  # a new LayerNorm (models_vit.py, global pool)
    "dist_token": ("trunc_normal", 0.02),  # G2SD models_vit.py: trunc_normal_(self.dist_token, std=.02)
    "head_dist.weight": ("trunc_normal", 0.02), "head_dist.bias": ("zeros", 0.0),  # G2SD: head_dist._init_weights
}
# MAE's pre-training model (models_mae.py: decoder, mask token) and G2SD's generic-stage feature predictors
DROPPED_PREFIXES = ("decoder_", "mask_token", "encoderfeature_pred.", "decoderfeature_pred.")


def load_init(path_or_state_dict, cfg: ViTConfig, *, seed: int = 0) -> Params:
    """A fine-tuning run's starting weights for cfg from a pre-trained file, as MAE's main_finetune.py starts one
    (G2SD's main_finetune_dis.py does the same): the file's encoder (timm names; MAE's {"model": sd}, timm's `.mae`
    safetensors) plus fresh FRESH_KEYS where the file lacks them. The head weight is always drawn anew
    (trunc-normal 2e-5, as MAE does after loading); a head of another class count is dropped first. Dropped: MAE's
    decoder / mask token and G2SD's predictors (DROPPED_PREFIXES), and the encoder's final `norm` when cfg pools
    globally (MAE deletes it). A 1 + n position table given to a 2-prefix model (a distillation token, G2SD's student)
    gets a zero row for that token: G2SD adds no position to it. Any other missing, extra or mis-shaped key raises."""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        sd = read_state_dict(path_or_state_dict)
    else:
        sd = unwrap_state_dict(path_or_state_dict)
    if cfg.family != "vit":
        raise ValueError(f"load_init starts ViT fine-tuning runs; {cfg.name} is family={cfg.family!r}")
    want = param_shapes(cfg)
    sd = {k: v for k, v in rename_keys(sd).items() if not k.startswith(DROPPED_PREFIXES)
          and not (cfg.head == "avg" and k in ("norm.weight", "norm.bias"))
          and not (k.startswith("head") and k in want and tuple(v.shape) != want[k])}
    pos = sd.get("pos_embed")
    if (pos is not None and cfg.num_prefix_tokens == 2 and not cfg.reg_tokens and cfg.pos_embed_prefix
            and pos.shape[1] + 1 == want["pos_embed"][1]):
        sd["pos_embed"] = torch.cat([pos[:, :1], torch.zeros_like(pos[:, :1]), pos[:, 1:]], dim=1)
    g = torch.Generator().manual_seed(seed)
    for k in [k for k in want if k in FRESH_KEYS and (k not in sd or k == "head.weight")]:
        kind, std = FRESH_KEYS[k]
        t = torch.zeros(want[k]) if kind == "zeros" else torch.ones(want[k])
        if kind == "trunc_normal":  # timm's trunc_normal_ bounds (-2, 2) are absolute: a plain normal at these stds
            t = torch.nn.init.trunc_normal_(t, std=std, a=-2.0, b=2.0, generator=g)
        sd[k] = t
    return match_params(sd, cfg, source=f"checkpoint {path_or_state_dict}" if isinstance(
        path_or_state_dict, (str, os.PathLike)) else "state dict")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temp file in path's folder, fsync it, then rename over path: a crash leaves
    either the old file or the new one, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_params(params: Params, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write params as .safetensors atomically (loadable by load_checkpoint and by timm)."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().contiguous().cpu() for k, v in params.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """torch.save a training checkpoint dict atomically (load it back with torch.load(weights_only=True))."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
