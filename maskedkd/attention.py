"""One pre-norm transformer block on fused attention, and the CLS-row scores MaskedKD ranks patches by.

The block never builds the (b, h, n, n) attention matrix: it calls `scaled_dot_product_attention`. When the
selection scores are wanted, the CLS query row alone is recomputed from q and k: O(n) per head, in fp32
even under autocast, because bf16 ties and rounding change which patches make the top-k.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce

from .config import ViTConfig

Params = dict[str, torch.Tensor]


def cls_attention_scores(q: torch.Tensor, k: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """q, k (b h n d) -> (b, n - num_prefix): softmax_n(q_cls . k_n / sqrt(d)) averaged over heads,
    prefix-key columns dropped, not renormalised: the official `attn.mean(dim=1)[:, 0, num_prefix:]`."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        q_cls = q[:, :, 0].float()  # b h d
        logits = torch.einsum("b h d, b h n d -> b h n", q_cls, k.float()) * q.shape[-1] ** -0.5
        attn = reduce(logits.softmax(dim=-1), "b h n -> b n", "mean")
    return attn[:, num_prefix:]


def layer_norm(x: torch.Tensor, params: Params, prefix: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], params[f"{prefix}.weight"], params[f"{prefix}.bias"], eps)


def linear(x: torch.Tensor, params: Params, prefix: str) -> torch.Tensor:
    return F.linear(x, params[f"{prefix}.weight"], params.get(f"{prefix}.bias"))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's GELU approximation x * sigmoid(1.702 x) (timm's QuickGELU)."""
    return x * torch.sigmoid(1.702 * x)


def mlp(x: torch.Tensor, params: Params, prefix: str, cfg: ViTConfig) -> torch.Tensor:
    """x (b n d) -> (b n d): fc2(act(fc1(x))), act = GELU (erf) or QuickGELU per cfg.act."""
    act = F.gelu if cfg.act == "gelu" else quick_gelu
    return linear(act(linear(x, params, f"{prefix}.fc1")), params, f"{prefix}.fc2")


def drop_path(x: torch.Tensor, prob: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastic depth: zero a whole residual branch per sample with probability `prob`, scale the rest."""
    if prob <= 0.0:
        return x
    keep = 1.0 - prob
    mask = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, generator=generator) < keep
    return x * mask.to(x.dtype) / keep


def block(
    x: torch.Tensor,
    params: Params,
    i: int,
    cfg: ViTConfig,
    *,
    drop_prob: float = 0.0,
    want_scores: bool = False,
    generator: torch.Generator | None = None,
    key_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Block i: x (b n d) -> (x', scores or None). Pre-norm attention + MLP, optional layer scale.
    key_mask (b n) bool: tokens that may be attended to (padding for per-sample token counts)."""
    pre = f"blocks.{i}"
    h = layer_norm(x, params, f"{pre}.norm1", cfg.norm_eps)
    qkv = linear(h, params, f"{pre}.attn.qkv")
    q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=cfg.num_heads)
    mask = None if key_mask is None else rearrange(key_mask, "b n -> b 1 1 n")
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    o = linear(rearrange(o, "b h n d -> b n (h d)"), params, f"{pre}.attn.proj")
    if cfg.layer_scale is not None:
        o = o * params[f"{pre}.ls1.gamma"]
    x = x + drop_path(o, drop_prob, generator)

    h = layer_norm(x, params, f"{pre}.norm2", cfg.norm_eps)
    h = mlp(h, params, f"{pre}.mlp", cfg)
    if cfg.layer_scale is not None:
        h = h * params[f"{pre}.ls2.gamma"]
    x = x + drop_path(h, drop_prob, generator)
    scores = cls_attention_scores(q, k, cfg.num_prefix_tokens) if want_scores else None
    return x, scores
