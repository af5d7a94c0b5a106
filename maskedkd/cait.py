"""CaiT (Touvron et al., "Going deeper with Image Transformers", ICCV 2021) as pure functions over timm-named tensors.

Layout of timm 1.0.31's `cait.py`: `depth` LayerScale self-attention blocks with talking-heads attention run on
the patch tokens alone (the class token is not in the sequence); then `class_attn_depth` class-attention blocks
update the class token only, its single query attending over [CLS, patches]; then norm over [CLS, patches] and the
head on CLS. The position embedding covers the patches only (`pos_embed_prefix=False`), so model.embed, the
gather and the head are shared with the ViT path; only the blocks differ (`run_blocks` here).

The masked CaiT teacher of the official MaskedKD code [docs/paper.md#method]: position embedding on all patches,
gather the kept ones, self-attention blocks on the kept patches only, class attention of CLS over [CLS, kept].

Dimensions: b batch, n tokens (keys m where queries and keys differ), h heads (g the mixed-into head), d head dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .attention import Params, cls_attention_scores, drop_path, layer_norm, linear, mlp
from .config import ViTConfig


def block_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Names (timm 1.0.31's) -> shapes of CaiT's self-attention and class-attention blocks."""
    d, hid, h = cfg.embed_dim, cfg.mlp_hidden, cfg.num_heads
    s: dict[str, tuple[int, ...]] = {}

    def common(b: str) -> None:
        s.update({f"{b}.gamma_1": (d,), f"{b}.gamma_2": (d,), f"{b}.norm1.weight": (d,), f"{b}.norm1.bias": (d,),
                  f"{b}.attn.proj.weight": (d, d), f"{b}.attn.proj.bias": (d,),
                  f"{b}.norm2.weight": (d,), f"{b}.norm2.bias": (d,),
                  f"{b}.mlp.fc1.weight": (hid, d), f"{b}.mlp.fc1.bias": (hid,),
                  f"{b}.mlp.fc2.weight": (d, hid), f"{b}.mlp.fc2.bias": (d,)})

    for i in range(cfg.depth):
        b = f"blocks.{i}"
        common(b)
        s.update({f"{b}.attn.qkv.weight": (3 * d, d), f"{b}.attn.proj_l.weight": (h, h),
                  f"{b}.attn.proj_l.bias": (h,), f"{b}.attn.proj_w.weight": (h, h), f"{b}.attn.proj_w.bias": (h,)})
        if cfg.qkv_bias:
            s[f"{b}.attn.qkv.bias"] = (3 * d,)
    for j in range(cfg.class_attn_depth):
        b = f"blocks_token_only.{j}"
        common(b)
        for t in "qkv":
            s[f"{b}.attn.{t}.weight"] = (d, d)
            if cfg.qkv_bias:
                s[f"{b}.attn.{t}.bias"] = (d,)
    return s


def _mix_heads(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """a (b h n m), weight (g h) -> (b g n m): sum_h weight[g, h] a[:, h]. One batched matmul on the contiguous
    (b, h, n*m) view: no permute copy, ~3x faster on CPU than timm's permute + Linear + permute."""
    return torch.matmul(weight, rearrange(a, "b h n m -> b h (n m)")).view_as(a)


def talking_heads_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, params: Params, pre: str,
                            key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """q, k, v (b h n d) -> (b h n d): softmax over keys of the head-mixed logits (proj_l), head-mixed again
    (proj_w), times v [CaiT eq. talking heads; Shazeer et al. 2020].

    Talking heads mix each (query, key) logit ACROSS heads before and after the softmax, so fused SDPA cannot
    run it: the (b h n n) matrix is materialised, the one place in this package that does. This is the exact
    formulation with the fewest MACs (QK^T n^2 D, two mixes H^2 n^2, AV n^2 D, as docs/paper.md#flops-model counts);
    folding
    proj_l into q instead costs H n^2 D for the logits (7x more at CaiT-S24's H=8, D=384; measured 1.5x slower).
    Two biases are applied without touching the (b h n n) matrix, exactly:
    - proj_l's bias shifts head g's logits by a constant over the keys: softmax is invariant to it, so it is dropped;
    - proj_w's bias adds bias[g] to every weight of head g: its effect is bias[g] * sum over (valid) keys of v.
    key_mask (b n) bool: keys that may be attended to (masked keys get zero weight after both mixes)."""
    logits = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))  # b h n m
    logits = _mix_heads(logits, params[f"{pre}.proj_l.weight"])
    if key_mask is not None:
        logits = logits.masked_fill(~rearrange(key_mask, "b m -> b 1 1 m"), float("-inf"))
    attn = _mix_heads(logits.softmax(dim=-1), params[f"{pre}.proj_w.weight"])
    if key_mask is None:
        v_sum = v.sum(dim=-2, keepdim=True)  # b h 1 d
    else:
        v_sum = (v * rearrange(key_mask, "b m -> b 1 m 1").to(v.dtype)).sum(dim=-2, keepdim=True)
    bias = rearrange(params[f"{pre}.proj_w.bias"], "h -> h 1 1").to(v.dtype)
    return torch.matmul(attn, v) + bias * v_sum


def self_attention_block(x: torch.Tensor, params: Params, i: int, cfg: ViTConfig, *, drop_prob: float = 0.0,
                         generator: torch.Generator | None = None,
                         key_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Self-attention block i on the patch tokens: x (b n d) -> (b n d). LayerScale (gamma_1, gamma_2),
    talking-heads attention, MLP; key_mask (b n) bool as in talking_heads_attention."""
    pre = f"blocks.{i}"
    h = layer_norm(x, params, f"{pre}.norm1", cfg.norm_eps)
    q, k, v = rearrange(linear(h, params, f"{pre}.attn.qkv"), "b n (three h d) -> three b h n d", three=3,
                        h=cfg.num_heads)
    o = talking_heads_attention(q, k, v, params, f"{pre}.attn", key_mask)
    o = linear(rearrange(o, "b h n d -> b n (h d)"), params, f"{pre}.attn.proj")
    x = x + drop_path(o * params[f"{pre}.gamma_1"], drop_prob, generator)
    h = mlp(layer_norm(x, params, f"{pre}.norm2", cfg.norm_eps), params, f"{pre}.mlp", cfg)
    return x + drop_path(h * params[f"{pre}.gamma_2"], drop_prob, generator)


def class_attention_block(cls: torch.Tensor, x: torch.Tensor, params: Params, j: int, cfg: ViTConfig, *,
                          want_scores: bool = False, key_mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class-attention block j: cls (b 1 d), patches x (b n d) -> (cls' (b 1 d), scores (b n) or None).
    Only the class token is updated: its one query attends over [CLS, patches] on fused SDPA (plain softmax
    attention, no talking heads). Scores: that query's head-mean attention, CLS column dropped, in fp32 from
    q and k (attention.cls_attention_scores). key_mask (b, 1 + n) bool covers [CLS, patches]."""
    pre = f"blocks_token_only.{j}"
    h = layer_norm(torch.cat([cls, x], dim=1), params, f"{pre}.norm1", cfg.norm_eps)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b n (h d) -> b h n d", h=cfg.num_heads)

    q = heads(linear(h[:, :1], params, f"{pre}.attn.q"))  # b h 1 d
    k, v = heads(linear(h, params, f"{pre}.attn.k")), heads(linear(h, params, f"{pre}.attn.v"))
    mask = None if key_mask is None else rearrange(key_mask, "b n -> b 1 1 n")
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    o = linear(rearrange(o, "b h n d -> b n (h d)"), params, f"{pre}.attn.proj")
    cls = cls + o * params[f"{pre}.gamma_1"]
    h = mlp(layer_norm(cls, params, f"{pre}.norm2", cfg.norm_eps), params, f"{pre}.mlp", cfg)
    cls = cls + h * params[f"{pre}.gamma_2"]
    return cls, (cls_attention_scores(q, k, 1) if want_scores else None)


def run_blocks(params: Params, tokens: torch.Tensor, cfg: ViTConfig, *, drop_path: float = 0.0,
               want_scores: bool = False, generator: torch.Generator | None = None,
               key_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """tokens [CLS, patches] (b, 1 + n, d) -> (normed [CLS, patches] (b, 1 + n, d), the last class-attention
    block's CLS scores over the patches (b n) or None). Stochastic depth at the constant rate drop_path on the
    self-attention blocks only, as timm's CaiT (its class-attention blocks have none).
    key_mask (b, 1 + n) bool: which tokens may be attended to (padded per-sample budgets)."""
    cls, x = tokens[:, :1], tokens[:, 1:]
    patch_mask = None if key_mask is None else key_mask[:, 1:]
    for i in range(cfg.depth):
        x = self_attention_block(x, params, i, cfg, drop_prob=drop_path, generator=generator, key_mask=patch_mask)
    scores = None
    for j in range(cfg.class_attn_depth):
        last = j == cfg.class_attn_depth - 1
        cls, s = class_attention_block(cls, x, params, j, cfg, want_scores=want_scores and last, key_mask=key_mask)
        scores = s if s is not None else scores
    return layer_norm(torch.cat([cls, x], dim=1), params, "norm", cfg.norm_eps), scores
