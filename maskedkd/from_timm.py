"""Any timm ViT, functionally: read a timm `nn.Module` into a ViTConfig and run it on its own parameters.

    cfg = mkd.config_from_timm(model)          # timm ViT (registers too) / DeiT / distilled DeiT / DeiT-III / CLIP /
                                               #    MAE-avg / CaiT
    params = dict(model.named_parameters())    # no copy: the module's own Parameters, timm's names
    logits = mkd.forward(params, x, cfg)       # == model.eval()(x) to 1e-5; student_forward, teacher_forward,
                                               #    make_train_step all take the same dict

The config is derived from the module's attributes and submodules (embed_dim, depth, heads, patch and image size,
prefix tokens, no_embed_class, layer scale, norm eps, norm_pre, MLP activation, qkv bias, head), then checked against
the module's named parameters name by name and shape by shape: everything the core reads is an `nn.Parameter` in
timm (no buffer holds weights; a module with any buffer is a variant we do not know and raises), and a parameter the
core would not read (qk_norm, gates, attention pooling, ...) raises naming it, so nothing is ignored.
Dropout is not part of the config: `drop_path_from_timm` gives the stochastic-depth rate for a training forward and
rejects the dropouts the core does not apply. timm is imported inside the functions: the core imports without it.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import Params
from .config import ViTConfig
from .model import _drop_probs, param_shapes


def _unsupported(model: nn.Module, option: str, why: str = "") -> ValueError:
    return ValueError(f"{type(model).__name__}: {option} is not supported by maskedkd's functional core"
                      + (f" ({why})" if why else ""))


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside torch.compile / DDP / DataParallel wrappers."""
    from timm.utils import unwrap_model
    return unwrap_model(model)


def params_from_timm(model: nn.Module) -> Params:
    """dict(named_parameters()) of the module inside any compile / DDP wrapper: timm's names, the Parameters
    themselves (no copy), so an optimizer over `model.parameters()` and the functional core share them."""
    return dict(_unwrap(model).named_parameters())


def _act(model: nn.Module, act: nn.Module) -> str:
    from timm.layers import GELU, QuickGELU
    if (type(act) is nn.GELU and act.approximate == "none") or type(act) is GELU:
        return "gelu"
    if type(act) is QuickGELU:
        return "quick_gelu"
    extra = f"(approximate={act.approximate!r})" if isinstance(act, nn.GELU) else ""
    raise _unsupported(model, f"act_layer={type(act).__name__}{extra}", "GELU (erf) or QuickGELU only")


def _mlp_ratio(hidden: int, dim: int) -> float:
    """A ratio whose int(dim * ratio) is hidden (hidden / dim can round just below it: 56 * (115 / 56) < 115)."""
    ratio = hidden / dim
    return ratio if int(dim * ratio) == hidden else (hidden + 0.5) / dim


def _eps(model: nn.Module, norms: list[tuple[str, nn.Module]]) -> float:
    """The one LayerNorm eps of these norms; each an affine LayerNorm with bias."""
    eps = set()
    for name, m in norms:
        if not isinstance(m, nn.LayerNorm):
            raise _unsupported(model, f"norm_layer={type(m).__name__} at {name}", "LayerNorm only")
        if not m.elementwise_affine or m.bias is None or len(m.normalized_shape) != 1:
            raise _unsupported(model, f"a LayerNorm without affine weight and bias at {name}")
        eps.add(float(m.eps))
    if len(eps) != 1:
        raise _unsupported(model, f"LayerNorms with different eps {sorted(eps)}", "one eps for every norm")
    return eps.pop()


def _patch_embed(model: nn.Module) -> tuple[int, tuple[int, int], int]:
    """(patch_size, img_size, in_chans) of a plain non-overlapping timm PatchEmbed."""
    from timm.layers import PatchEmbed
    pe = model.patch_embed
    if type(pe) is not PatchEmbed:
        raise _unsupported(model, f"embed_layer={type(pe).__name__}", "timm.layers.PatchEmbed only")
    proj = pe.proj
    square = isinstance(proj, nn.Conv2d) and proj.kernel_size == proj.stride and len(set(proj.kernel_size)) == 1
    if not square or proj.padding not in ((0, 0), "valid") or proj.dilation != (1, 1) or proj.groups != 1:
        raise _unsupported(model, f"patch projection {proj}", "a square, non-overlapping Conv2d only")
    if not isinstance(pe.norm, nn.Identity):
        raise _unsupported(model, "embed_norm_layer (a norm inside the patch embedding)")
    if getattr(pe, "dynamic_img_pad", False):
        raise _unsupported(model, "dynamic_img_pad=True")
    if not getattr(pe, "strict_img_size", True) or not getattr(pe, "flatten", True):
        raise _unsupported(model, "dynamic_img_size=True / a non-flattened patch embedding")
    if pe.img_size is None:
        raise _unsupported(model, "img_size=None", "a fixed input size is needed")
    return proj.kernel_size[0], tuple(pe.img_size), proj.in_channels


def _vit(model: nn.Module, distilled: bool) -> dict:
    from timm.layers import Attention, LayerScale, Mlp
    from timm.models.vision_transformer import Block
    gp = model.global_pool
    if gp not in ("token", "avg") or getattr(model, "attn_pool", None) is not None:
        raise _unsupported(model, f"global_pool={gp!r}", "'token' (the class token) or 'avg' (MAE: mean of the "
                                                         "patch tokens, fc_norm)")
    if not getattr(model, "has_class_token", True) or model.cls_token is None:
        raise _unsupported(model, "class_token=False", "the class token's attention ranks the patches")
    if getattr(model, "dynamic_img_size", False):
        raise _unsupported(model, "dynamic_img_size=True", "a fixed image size and position embedding only")
    if model.pos_embed is None:
        raise _unsupported(model, "pos_embed='none'", "a learned absolute position embedding only")
    if not isinstance(model.patch_drop, nn.Identity):
        raise _unsupported(model, f"patch_drop_rate={model.patch_drop.prob}")
    final, fc = not isinstance(model.norm, nn.Identity), not isinstance(model.fc_norm, nn.Identity)
    if gp == "avg":  # the core's head="avg": blocks -> mean of the patch tokens -> fc_norm -> head, no final norm
        if getattr(model, "pool_include_prefix", False):
            raise _unsupported(model, "pool_include_prefix=True", "global_pool='avg' averages the patch tokens only")
        if final or not fc:
            raise _unsupported(model, "global_pool='avg' with fc_norm=False" if final else "final_norm=False",
                               "the avg head is fc_norm after the pooling and no norm before it")
    elif not final or fc:
        raise _unsupported(model, "fc_norm=True" if fc else "final_norm=False", "the token head reads the final norm")
    if not isinstance(model.head, nn.Linear) or (distilled and not isinstance(model.head_dist, nn.Linear)):
        raise _unsupported(model, f"num_classes={model.num_classes} (no classifier head)")
    if distilled and getattr(model, "distilled_training", False):
        raise _unsupported(model, "distilled_training=True", "the core averages the two heads, timm's eval output")
    pre_norm = not isinstance(model.norm_pre, nn.Identity)
    norms = [("fc_norm", model.fc_norm) if gp == "avg" else ("norm", model.norm)]
    norms += [("norm_pre", model.norm_pre)] if pre_norm else []
    blocks = list(model.blocks)
    if not blocks:
        raise _unsupported(model, "depth=0")
    heads, hidden, acts, ls = set(), set(), set(), set()
    for i, b in enumerate(blocks):
        at = f"blocks.{i}"
        if type(b) is not Block:
            raise _unsupported(model, f"block_fn={type(b).__name__} at {at}", "timm's pre-norm Block only")
        a, m = b.attn, b.mlp
        if type(a) is not Attention:
            raise _unsupported(model, f"attn_layer={type(a).__name__} at {at}", "timm.layers.Attention only")
        if not isinstance(a.q_norm, nn.Identity) or not isinstance(a.k_norm, nn.Identity):
            raise _unsupported(model, f"qk_norm=True at {at}")
        if not isinstance(a.norm, nn.Identity):
            raise _unsupported(model, f"scale_attn_norm=True at {at}")
        if getattr(a, "gate", None) is not None:
            raise _unsupported(model, f"gated attention at {at}")
        if a.head_dim * a.num_heads != model.embed_dim or abs(a.scale - a.head_dim ** -0.5) > 1e-12:
            raise _unsupported(model, f"attn_head_dim={a.head_dim} with {a.num_heads} heads at {at}",
                               f"heads x head_dim must equal embed_dim={model.embed_dim}")
        if type(m) is not Mlp or not isinstance(m.fc1, nn.Linear):
            raise _unsupported(model, f"mlp_layer={type(m).__name__} at {at}", "timm.layers.Mlp (Linear) only")
        if a.proj.bias is None or m.fc1.bias is None or m.fc2.bias is None:
            raise _unsupported(model, f"proj_bias=False at {at}")
        if not isinstance(m.norm, nn.Identity):
            raise _unsupported(model, f"scale_mlp_norm=True at {at}")
        kinds = {type(b.ls1), type(b.ls2)}
        if not kinds <= {LayerScale, nn.Identity} or len(kinds) != 1:
            raise _unsupported(model, f"layer scale {sorted(k.__name__ for k in kinds)} at {at}")
        heads.add(a.num_heads)
        hidden.add(m.fc1.out_features)
        acts.add(_act(model, m.act))
        ls.add(b.ls1.init_values if isinstance(b.ls1, LayerScale) else None)
        norms += [(f"{at}.norm1", b.norm1), (f"{at}.norm2", b.norm2)]
    if len(heads) > 1 or len(hidden) > 1 or len(acts) > 1 or (len(ls) > 1 and None in ls):
        raise _unsupported(model, f"blocks that differ (heads {heads}, mlp widths {hidden}, acts {acts}, layer scale "
                                  f"{ls})", "every block alike")
    patch, img, chans = _patch_embed(model)
    layer_scale = ls.pop() if None not in ls else None
    return dict(img_size=img, patch_size=patch, in_chans=chans, embed_dim=model.embed_dim, depth=len(blocks),
                num_heads=heads.pop(), mlp_ratio=_mlp_ratio(hidden.pop(), model.embed_dim),
                qkv_bias=blocks[0].attn.qkv.bias is not None, reg_tokens=getattr(model, "num_reg_tokens", 0),
                num_prefix_tokens=(2 if distilled else 1) + getattr(model, "num_reg_tokens", 0),
                pos_embed_prefix=not model.no_embed_class, layer_scale=layer_scale,
                head="token_dist" if distilled else gp, norm_eps=_eps(model, norms), pre_norm=pre_norm,
                act=acts.pop(), num_classes=model.num_classes)


def _cait(model: nn.Module) -> dict:
    from timm.layers import Mlp
    from timm.models.cait import ClassAttn, LayerScaleBlock, LayerScaleBlockClassAttn, TalkingHeadAttn
    if model.global_pool != "token":
        raise _unsupported(model, f"global_pool={model.global_pool!r}", "only 'token': the head reads the class token")
    if not isinstance(model.head, nn.Linear):
        raise _unsupported(model, f"num_classes={model.num_classes} (no classifier head)")
    if model.blocks_token_only is None or not len(model.blocks_token_only) or model.cls_token is None:
        raise _unsupported(model, "a CaiT without class-attention blocks (pruned by prune_intermediate_layers)")
    blocks, cls_blocks = list(model.blocks), list(model.blocks_token_only)
    norms, hidden, acts, heads, bias = [("norm", model.norm)], set(), set(), set(), set()
    for at, b, blk_t, attn_t in [(f"blocks.{i}", b, LayerScaleBlock, TalkingHeadAttn) for i, b in enumerate(blocks)] + \
            [(f"blocks_token_only.{j}", b, LayerScaleBlockClassAttn, ClassAttn) for j, b in enumerate(cls_blocks)]:
        if type(b) is not blk_t or type(b.attn) is not attn_t or type(b.mlp) is not Mlp:
            raise _unsupported(model, f"{type(b).__name__}/{type(b.attn).__name__}/{type(b.mlp).__name__} at {at}",
                               "timm's LayerScaleBlock + TalkingHeadAttn and LayerScaleBlockClassAttn + ClassAttn")
        if not isinstance(b.mlp.norm, nn.Identity) or b.mlp.fc1.bias is None:
            raise _unsupported(model, f"an MLP with a norm or without bias at {at}")
        heads.add(b.attn.num_heads)
        hidden.add(b.mlp.fc1.out_features)
        acts.add(_act(model, b.mlp.act))
        bias.add((b.attn.qkv if attn_t is TalkingHeadAttn else b.attn.q).bias is not None)
        norms += [(f"{at}.norm1", b.norm1), (f"{at}.norm2", b.norm2)]
    if len(hidden) > 1:
        raise _unsupported(model, f"mlp_ratio_token_only != mlp_ratio (MLP widths {sorted(hidden)})")
    if len(heads) > 1 or len(acts) > 1 or len(bias) > 1:
        raise _unsupported(model, f"blocks that differ (heads {heads}, acts {acts}, qkv bias {bias})")
    patch, img, chans = _patch_embed(model)
    # timm's Cait does not store its layer-scale init (gamma_1/gamma_2 are plain Parameters); the config's value only
    # seeds init_params, so it takes the 1e-5 of every cait_* preset.
    return dict(img_size=img, patch_size=patch, in_chans=chans, embed_dim=model.embed_dim, depth=len(blocks),
                num_heads=heads.pop(), mlp_ratio=_mlp_ratio(hidden.pop(), model.embed_dim), qkv_bias=bias.pop(),
                num_prefix_tokens=1, pos_embed_prefix=False, layer_scale=1e-5, norm_eps=_eps(model, norms),
                act=acts.pop(), num_classes=model.num_classes, family="cait", class_attn_depth=len(cls_blocks))


def config_from_timm(model: nn.Module, name: str | None = None) -> ViTConfig:
    """A timm VisionTransformer (ViT, DeiT, DeiT-III, CLIP, MAE-style global_pool='avg'), VisionTransformerDistilled
    or Cait instance -> the ViTConfig under which `dict(model.named_parameters())` runs in the functional core, equal to
    the module's eval forward. Raises ValueError naming any class or option the core does not implement (Swin, reg
    tokens, global_pool='max' / 'map', no class token, qk_norm, dynamic_img_size, fc_norm with the token head, ...).
    torch.compile / DDP wrappers are unwrapped."""
    from timm.models.cait import Cait
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer
    model = _unwrap(model)
    kind = type(model)
    if kind is VisionTransformer or kind is VisionTransformerDistilled:
        kw = _vit(model, distilled=kind is VisionTransformerDistilled)
    elif kind is Cait:
        kw = _cait(model)
    else:
        raise ValueError(f"model class {kind.__module__}.{kind.__name__} is not supported by config_from_timm; "
                         f"supported: timm VisionTransformer (ViT, DeiT, DeiT-III, CLIP), VisionTransformerDistilled, "
                         f"Cait")
    if name is None:
        name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or kind.__name__
    cfg = ViTConfig(name=name, **kw)
    buffers = [n for n, _ in model.named_buffers()]
    if buffers:
        raise _unsupported(model, f"buffers {buffers[:8]}", "every tensor the core reads is a Parameter in timm")
    have = {n: tuple(p.shape) for n, p in model.named_parameters()}
    want = param_shapes(cfg)
    extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
    shapes = sorted(f"{k}: module {have[k]} vs config {want[k]}" for k in set(have) & set(want) if have[k] != want[k])
    if extra or missing or shapes:
        raise _unsupported(model, f"parameters the core does not read {extra[:8]}; missing {missing[:8]}; "
                                  f"mis-shaped {shapes[:8]}", "an option this reader does not know")
    return cfg


def drop_path_from_timm(model: nn.Module, cfg: ViTConfig | None = None) -> float:
    """The `drop_path=` rate under which the core's training forward matches the module's train-mode forward:
    the last block's rate of timm's linear schedule (CaiT: its constant rate). Raises for dropout with p > 0
    (pos_drop, proj_drop, attn_drop, head_drop) or per-block rates off that schedule, naming them."""
    model = _unwrap(model)
    cfg = cfg or config_from_timm(model)
    drops = [f"{n} (p={m.p})" for n, m in model.named_modules() if isinstance(m, nn.Dropout) and m.p > 0]
    if drops:
        raise _unsupported(model, f"dropout {drops[:6]}", "the core applies stochastic depth only; set the rates to 0")
    rates = []
    for i, b in enumerate(model.blocks):
        paths = (b.drop_path1, b.drop_path2) if hasattr(b, "drop_path1") else (b.drop_path,)
        if not all(getattr(d, "scale_by_keep", True) for d in paths):
            raise _unsupported(model, f"DropPath(scale_by_keep=False) in blocks.{i}")
        ps = {float(getattr(d, "drop_prob", 0.0)) for d in paths}
        if len(ps) != 1:
            raise _unsupported(model, f"different drop-path rates {sorted(ps)} inside blocks.{i}")
        rates.append(ps.pop())
    for j, b in enumerate(getattr(model, "blocks_token_only", None) or []):
        if float(getattr(b.drop_path, "drop_prob", 0.0)) > 0:
            raise _unsupported(model, f"drop path in blocks_token_only.{j}", "CaiT's class-attention blocks have none")
    rate = rates[-1]
    want = [rate] * cfg.depth if cfg.family == "cait" else _drop_probs(cfg, rate)
    if any(abs(a - b) > 1e-6 for a, b in zip(rates, want)):
        raise _unsupported(model, f"drop-path rates {rates}", f"timm's schedule for drop_path_rate={rate}: {want}")
    return rate
