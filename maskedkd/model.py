"""Pure forward passes over a flat dict of tensors with timm's parameter names.

embed -> prefix tokens -> position embedding (-> norm_pre for CLIP) -> blocks -> norm -> head.
`student_forward` also returns the last block's CLS-row scores; `teacher_forward` keeps every prefix token
plus the gathered patches (after the position embedding, so each kept patch keeps its own position).
Every function dispatches on the config: CaiT (`cfg.family == "cait"`) shares the embedding, gather and head and
runs cait.run_blocks (self-attention on the patches, then class attention) instead of the ViT blocks.
"""
from __future__ import annotations

import math

import torch
from einops import repeat

from . import cait
from .attention import Params, block, layer_norm, linear
from .config import ViTConfig
from .patchify import patch_embed


def _vit_block_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    d, hid = cfg.embed_dim, cfg.mlp_hidden
    s: dict[str, tuple[int, ...]] = {}
    for i in range(cfg.depth):
        b = f"blocks.{i}"
        s.update({
            f"{b}.norm1.weight": (d,), f"{b}.norm1.bias": (d,),
            f"{b}.attn.qkv.weight": (3 * d, d), f"{b}.attn.proj.weight": (d, d), f"{b}.attn.proj.bias": (d,),
            f"{b}.norm2.weight": (d,), f"{b}.norm2.bias": (d,),
            f"{b}.mlp.fc1.weight": (hid, d), f"{b}.mlp.fc1.bias": (hid,),
            f"{b}.mlp.fc2.weight": (d, hid), f"{b}.mlp.fc2.bias": (d,),
        })
        if cfg.qkv_bias:
            s[f"{b}.attn.qkv.bias"] = (3 * d,)
        if cfg.layer_scale is not None:
            s[f"{b}.ls1.gamma"] = (d,)
            s[f"{b}.ls2.gamma"] = (d,)
    return s


def param_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter name (timm's naming) -> shape, for cfg (ViT blocks, or CaiT's: cait.block_shapes)."""
    d, p = cfg.embed_dim, cfg.patch_size
    n_pos = cfg.num_patches + (cfg.num_prefix_tokens if cfg.pos_embed_prefix else 0)
    s: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, n_pos, d),
        "patch_embed.proj.weight": (d, cfg.in_chans, p, p),
    }
    if cfg.pre_norm:  # CLIP: norm_pre, and (as timm builds it) no patch-embed bias
        s.update({"norm_pre.weight": (d,), "norm_pre.bias": (d,)})
    else:
        s["patch_embed.proj.bias"] = (d,)
    if cfg.class_tokens == 2:
        s["dist_token"] = (1, 1, d)
    if cfg.reg_tokens:
        s["reg_token"] = (1, cfg.reg_tokens, d)
    s.update(cait.block_shapes(cfg) if cfg.family == "cait" else _vit_block_shapes(cfg))
    if cfg.head != "avg":  # MAE's global-pool model has no final norm (models_vit.py deletes it), only fc_norm
        s.update({"norm.weight": (d,), "norm.bias": (d,)})
    if cfg.head in ("prefix_mean", "avg"):
        s.update({"fc_norm.weight": (d,), "fc_norm.bias": (d,)})
    s.update({"head.weight": (cfg.num_classes, d), "head.bias": (cfg.num_classes,)})
    if cfg.head == "token_dist":
        s.update({"head_dist.weight": (cfg.num_classes, d), "head_dist.bias": (cfg.num_classes,)})
    return s


def check_params(params, cfg: ViTConfig, source: str = "params") -> None:
    """The one check that parameters fit a config: exactly cfg's names (param_shapes) with cfg's shapes, tensors
    all. Run where parameters meet a config (a checkpoint load, a TeacherView, a train step's first call), not per
    forward. Raises naming the source, every missing, unexpected and mis-shaped key (a wider or deeper model's
    parameters would otherwise run with the config's head count, or with blocks ignored)."""
    if not isinstance(params, dict):
        raise TypeError(f"{source}: expected a dict of tensors keyed by timm's names, got {type(params).__name__}")
    want = param_shapes(cfg)
    missing = sorted(set(want) - set(params))
    unexpected = sorted(set(params) - set(want))
    shapes = sorted(f"{k}: given {tuple(getattr(params[k], 'shape', ()))} vs config {want[k]}" for k in set(want) & set(params)
                    if not isinstance(params[k], torch.Tensor) or tuple(params[k].shape) != want[k])
    if missing or unexpected or shapes:
        def show(xs):
            return f"{xs[:12]}{' ...' if len(xs) > 12 else ''} ({len(xs)})"
        raise ValueError(f"{source}: parameters do not match config {cfg.name!r}: missing keys {show(missing)}; unexpected keys "
                         f"{show(unexpected)}; mis-shaped {show(shapes)}")


def init_params(cfg: ViTConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> Params:
    """Fresh parameters, initialised as timm does: trunc-normal(0.02) linears and position embedding,
    PyTorch's default (kaiming-uniform) patch filters, unit LayerNorms, layer scale at cfg.layer_scale
    (CaiT: gamma_1/gamma_2, and a trunc-normal(0.02) class token as timm's cait.py)."""
    g = torch.Generator().manual_seed(seed)
    out: Params = {}
    for name, shape in param_shapes(cfg).items():
        t = torch.zeros(shape, dtype=torch.float32)
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name in (
                "norm.weight", "fc_norm.weight", "norm_pre.weight"):
            t.fill_(1.0)
        elif name.endswith((".gamma", ".gamma_1", ".gamma_2")):
            t.fill_(cfg.layer_scale)
        elif name == "patch_embed.proj.weight":
            bound = 1.0 / math.sqrt(cfg.patch_dim)
            t.uniform_(-bound, bound, generator=g)
        elif name == "cls_token" and cfg.family == "cait":
            torch.nn.init.trunc_normal_(t, std=0.02, a=-2.0, b=2.0, generator=g)
        elif name in ("cls_token", "dist_token", "reg_token"):
            t.normal_(0.0, 0.02 if name == "dist_token" else 1e-6, generator=g)
        elif name == "pos_embed" or name.endswith(".weight"):
            torch.nn.init.trunc_normal_(t, std=0.02, a=-2.0, b=2.0, generator=g)
        out[name] = t.to(dtype)
    return out


def embed(params: Params, x: torch.Tensor, cfg: ViTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (prefix (b np d), patches (b n d)), both with their position embeddings added (and, for CLIP's
    pre_norm, norm_pre applied: a per-token LayerNorm, so it commutes with the teacher's gather)."""
    patches = patch_embed(x, params["patch_embed.proj.weight"], params.get("patch_embed.proj.bias"), cfg)
    b = patches.shape[0]
    names = ["cls_token", "dist_token"][: cfg.class_tokens] + ["reg_token"] * bool(cfg.reg_tokens)  # timm's order
    prefix = torch.cat([params[n].expand(b, -1, -1) for n in names], dim=1).to(patches.dtype)
    pos = params["pos_embed"]
    if cfg.pos_embed_prefix:
        prefix = prefix + pos[:, : cfg.num_prefix_tokens]
        patches = patches + pos[:, cfg.num_prefix_tokens :]
    else:  # DeiT-III, CaiT: no position embedding on the class token
        patches = patches + pos
    if cfg.pre_norm:
        prefix = layer_norm(prefix, params, "norm_pre", cfg.norm_eps)
        patches = layer_norm(patches, params, "norm_pre", cfg.norm_eps)
    return prefix, patches


def gather_patches(patches: torch.Tensor, keep_idx: torch.Tensor) -> torch.Tensor:
    """patches (b n d), keep_idx (b k) -> (b k d): each sample's kept patch tokens, in keep_idx order."""
    return torch.gather(patches, 1, repeat(keep_idx, "b k -> b k d", d=patches.shape[-1]))


def head_pair(params: Params, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A distilled DeiT's normed tokens (b n d) -> (class-head logits (b C) on CLS, distillation-head logits (b C) on
    the distillation token): the two outputs DeiT (and G2SD) train with two losses."""
    return linear(x[:, 0], params, "head"), linear(x[:, 1], params, "head_dist")


def head(params: Params, x: torch.Tensor, cfg: ViTConfig) -> torch.Tensor:
    """Tokens (b n d) from run_blocks -> logits (b C). DeiT: CLS; distilled DeiT: mean of its two heads (timm eval);
    AST: LayerNorm + Linear on the mean of the two prefix tokens; MAE fine-tuning (avg): LayerNorm (fc_norm) +
    Linear on the mean of the patch tokens (MAE models_vit.py global_pool, timm global_pool="avg")."""
    if cfg.head == "token":
        return linear(x[:, 0], params, "head")
    if cfg.head == "token_dist":
        cls, dist = head_pair(params, x)
        return (cls + dist) / 2
    if cfg.head == "avg":
        return linear(layer_norm(x[:, cfg.num_prefix_tokens:].mean(dim=1), params, "fc_norm", cfg.norm_eps),
                      params, "head")
    pooled = x[:, : cfg.class_tokens].mean(dim=1)
    return linear(layer_norm(pooled, params, "fc_norm", cfg.norm_eps), params, "head")


def _drop_probs(cfg: ViTConfig, drop_path: float) -> list[float]:
    """Stochastic-depth rate per block, rising linearly from 0 to drop_path (timm/DeiT)."""
    if cfg.depth == 1:
        return [drop_path]
    return [drop_path * i / (cfg.depth - 1) for i in range(cfg.depth)]


def run_blocks(params: Params, tokens: torch.Tensor, cfg: ViTConfig, *, drop_path: float = 0.0,
               want_scores: bool = False, generator: torch.Generator | None = None,
               key_mask: torch.Tensor | None = None):
    """tokens (b n d) -> (normed tokens (b n d), last block's CLS scores (b, n - np) or None); an avg-head model
    (MAE fine-tuning) has no final norm: its tokens come back as the last block left them.
    key_mask (b n) bool: which tokens may be attended to (padded per-sample budgets).
    CaiT: cait.run_blocks (the scores are its last class-attention block's; constant drop_path rate)."""
    if cfg.family == "cait":
        return cait.run_blocks(params, tokens, cfg, drop_path=drop_path, want_scores=want_scores,
                               generator=generator, key_mask=key_mask)
    scores = None
    for i, p in enumerate(_drop_probs(cfg, drop_path)):
        last = i == cfg.depth - 1
        tokens, s = block(tokens, params, i, cfg, drop_prob=p, want_scores=want_scores and last,
                          generator=generator, key_mask=key_mask)
        if s is not None:
            scores = s
    if cfg.head == "avg":
        return tokens, scores
    return layer_norm(tokens, params, "norm", cfg.norm_eps), scores


def forward(params: Params, x: torch.Tensor, cfg: ViTConfig, *, drop_path: float = 0.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """x (b c h w) or AST (b t f) -> logits (b C). Deterministic unless drop_path > 0."""
    prefix, patches = embed(params, x, cfg)
    tokens, _ = run_blocks(params, torch.cat([prefix, patches], dim=1), cfg, drop_path=drop_path,
                           generator=generator)
    return head(params, tokens, cfg)


def student_forward(params: Params, x: torch.Tensor, cfg: ViTConfig, *, drop_path: float = 0.0,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (logits (b C), scores (b n_patches)): scores are the last block's head-mean CLS-query attention
    over all keys, prefix columns dropped (the official `attn.mean(dim=1)[:, 0, num_prefix:]`), in fp32.
    CaiT: the last class-attention block's CLS query over [CLS, patches], CLS column dropped.
    A global-pool model (head="avg", MAE fine-tuning) is scored the same way, by its CLS token, although its head
    never reads it: MAE keeps the token (pre-trained with the encoder, a key and value of every patch in every block),
    the official line `attn.mean(dim=1)[:, 0, 1:]` on MAE's models_vit.py (the MaskedKD authors' MAE base) computes
    exactly this, and it stays an O(n) row beside fused attention. (The alternative, the mean attention of all patch
    queries, i.e. each patch's weight in the pooled attention output, needs the whole (n n) map; not used.)"""
    prefix, patches = embed(params, x, cfg)
    tokens, scores = run_blocks(params, torch.cat([prefix, patches], dim=1), cfg, drop_path=drop_path,
                                want_scores=True, generator=generator)
    return head(params, tokens, cfg), scores


def check_keep_idx(keep_idx: torch.Tensor, batch: int, num_patches: int) -> None:
    """Raise ValueError for keep indices of the wrong shape, dtype or range (a host sync: eager only)."""
    if keep_idx.ndim != 2 or keep_idx.shape[0] != batch:
        raise ValueError(f"keep_idx must be (b={batch}, k), got shape {tuple(keep_idx.shape)}")
    if keep_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"keep_idx must be an integer tensor, got {keep_idx.dtype}")
    k = keep_idx.shape[1]
    if not 1 <= k <= num_patches:
        raise ValueError(f"keep_idx keeps {k} patches; must be in 1..{num_patches}")
    if torch.compiler.is_compiling():
        return
    lo, hi = int(keep_idx.min()), int(keep_idx.max())
    if lo < 0 or hi >= num_patches:
        raise ValueError(f"keep_idx values must lie in 0..{num_patches - 1}, got min {lo} max {hi}")


def forward_tokens(params: Params, x: torch.Tensor, cfg: ViTConfig, keep_idx: torch.Tensor | None = None, *,
                   check: bool = True, drop_path: float = 0.0, want_scores: bool = False,
                   generator: torch.Generator | None = None, keep_valid: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x, keep_idx (b k) or None -> (normed tokens (b, np + k, d), last block's CLS scores over the kept patches
    (b k) or None): prefix tokens plus the gathered patches, with their original position embeddings.
    CaiT: [CLS after the class-attention blocks, kept patches after the self-attention blocks], normed.
    keep_valid (b k) bool marks which gathered patches count (a per-sample budget padded to k); the others are
    never attended to, so the result equals running on each sample's valid patches alone."""
    prefix, patches = embed(params, x, cfg)
    if keep_idx is not None:
        if check:
            check_keep_idx(keep_idx, patches.shape[0], patches.shape[1])
        patches = gather_patches(patches, keep_idx.long())
    key_mask = None
    if keep_valid is not None:
        key_mask = torch.cat([torch.ones_like(keep_valid[:, :1]).expand(-1, prefix.shape[1]), keep_valid], 1)
    return run_blocks(params, torch.cat([prefix, patches], dim=1), cfg, drop_path=drop_path,
                      want_scores=want_scores, generator=generator, key_mask=key_mask)


def teacher_forward(params: Params, x: torch.Tensor, cfg: ViTConfig, keep_idx: torch.Tensor | None = None,
                    *, check: bool = True, drop_path: float = 0.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """x, keep_idx (b k) patch indices -> logits (b C) of the teacher seeing all prefix tokens and the k kept
    patches with their original position embeddings. keep_idx=None: all patches (the plain forward).
    Runs as given: wrap it in torch.no_grad() (the train step does) so no graph is kept for the teacher.
    check=False skips the index range check (a host sync); the train step does, its indices come from top-k.
    drop_path > 0 is for training a model on kept patches (the student-masking ablation), never the teacher."""
    tokens, _ = forward_tokens(params, x, cfg, keep_idx, check=check, drop_path=drop_path, generator=generator)
    return head(params, tokens, cfg)
