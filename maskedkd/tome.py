"""Token merging in the teacher (ToMe, Bolya et al., ICLR 2023): the paper's alternative to masking
[docs/paper.md#ablations].

Instead of dropping patches at the input, every block merges the r most similar pairs of patch tokens after its
attention (bipartite soft matching on the attention keys, averaged over heads), and attention weighs each token
by how many patches it stands for (proportional attention: + log(size) on the logits). Prefix tokens are never
merged. Used only as a teacher (no gradient), to compare supervision quality at matched teacher FLOPs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

from .attention import Params, layer_norm, linear, mlp
from .config import ViTConfig
from .flops import macs
from .model import embed, head


def bipartite_merge(x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, r: int, num_prefix: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (b n d), size (b n 1), metric (b n c) -> (x', size') with r fewer tokens: patch tokens alternate into sets
    A and B; each A token's most similar B token (cosine on metric) is its edge; the r best edges merge their A
    token into the B token (size-weighted mean). Prefix tokens stay first and untouched."""
    pre_x, x = x[:, :num_prefix], x[:, num_prefix:]
    pre_s, size = size[:, :num_prefix], size[:, num_prefix:]
    m = F.normalize(metric[:, num_prefix:].float(), dim=-1)
    r = min(r, x.shape[1] // 2)
    if r <= 0:
        return torch.cat([pre_x, x], 1), torch.cat([pre_s, size], 1)
    sim = torch.einsum("b i c, b j c -> b i j", m[:, ::2], m[:, 1::2])  # (b, |A|, |B|)
    best, best_b = sim.max(dim=-1)  # each A token's edge
    order = best.argsort(dim=-1, descending=True)
    src, keep_a = order[:, :r], order[:, r:]  # A tokens merged away / kept
    dst = best_b.gather(1, src)

    def merge(v: torch.Tensor) -> torch.Tensor:  # v (b n e), already multiplied by size where averaged
        a, b_ = v[:, ::2], v[:, 1::2]
        e = v.shape[-1]
        kept = a.gather(1, repeat(keep_a, "b k -> b k e", e=e))
        moved = a.gather(1, repeat(src, "b k -> b k e", e=e))
        return torch.cat([kept, b_.scatter_add(1, repeat(dst, "b k -> b k e", e=e), moved)], dim=1)

    new_size = merge(size)
    new_x = merge(x * size) / new_size
    return torch.cat([pre_x, new_x], 1), torch.cat([pre_s, new_size], 1)


def tome_block(x: torch.Tensor, size: torch.Tensor, params: Params, i: int, cfg: ViTConfig, r: int):
    """Block i with proportional attention, then merge r tokens, then the MLP on the merged tokens."""
    pre = f"blocks.{i}"
    h = layer_norm(x, params, f"{pre}.norm1", cfg.norm_eps)
    q, k, v = rearrange(linear(h, params, f"{pre}.attn.qkv"), "b n (three h d) -> three b h n d", three=3,
                        h=cfg.num_heads)
    bias = rearrange(size.log(), "b n 1 -> b 1 1 n").to(q.dtype)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    o = linear(rearrange(o, "b h n d -> b n (h d)"), params, f"{pre}.attn.proj")
    if cfg.layer_scale is not None:
        o = o * params[f"{pre}.ls1.gamma"]
    x = x + o
    x, size = bipartite_merge(x, size, rearrange(k, "b h n d -> b n h d").mean(2), r, cfg.num_prefix_tokens)
    h = layer_norm(x, params, f"{pre}.norm2", cfg.norm_eps)
    h = mlp(h, params, f"{pre}.mlp", cfg)
    if cfg.layer_scale is not None:
        h = h * params[f"{pre}.ls2.gamma"]
    return x + h, size


def check_tome(cfg: ViTConfig) -> None:
    if cfg.family != "vit":
        raise ValueError(f"ToMe merging is implemented for plain ViT blocks, not family={cfg.family!r} ({cfg.name})")


def tome_forward(params: Params, x: torch.Tensor, cfg: ViTConfig, r: int) -> torch.Tensor:
    """x -> logits (b C) of the model merging r patch tokens in every block (r=0: the plain forward)."""
    check_tome(cfg)
    prefix, patches = embed(params, x, cfg)
    tokens = torch.cat([prefix, patches], dim=1)
    size = torch.ones(tokens.shape[0], tokens.shape[1], 1, device=x.device, dtype=tokens.dtype)
    for i in range(cfg.depth):
        tokens, size = tome_block(tokens, size, params, i, cfg, r)
    return head(params, layer_norm(tokens, params, "norm", cfg.norm_eps), cfg)


def tome_macs(cfg: ViTConfig, r: int) -> int:
    """MACs per sample with r merges per block: attention over the block's input tokens, MLP over the merged
    ones (the matching itself, ~(n/2)^2 c per block, is left out as ToMe does)."""
    check_tome(cfg)
    d, m = cfg.embed_dim, cfg.mlp_hidden
    n_patch = cfg.num_patches
    total = macs(cfg, 1) - cfg.depth * (4 * (cfg.num_prefix_tokens + 1) * d * d
                                        + 2 * (cfg.num_prefix_tokens + 1) ** 2 * d
                                        + 2 * (cfg.num_prefix_tokens + 1) * d * m)  # embed + head only
    for _ in range(cfg.depth):
        n = cfg.num_prefix_tokens + n_patch
        n_patch -= min(r, n_patch // 2)
        n_after = cfg.num_prefix_tokens + n_patch
        total += 4 * n * d * d + 2 * n * n * d + 2 * n_after * d * m
    return total
