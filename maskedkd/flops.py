"""Multiply-accumulates of one forward pass, and the training-compute ledger of the paper.

Convention [digest 2.7]: 1 MAC = 1 "FLOP", as in DeiT (DeiT-B = 17.6 G). For width D, depth L, MLP hidden
M, n = prefix + kept tokens, P patches of c*p*p values, C classes:
    per block   3nD^2 (qkv) + n^2 D (q k^T) + n^2 D (attn v) + nD^2 (proj) + 2nDM (MLP)
    patch embed P * c p^2 * D, over ALL patches: embedding runs before masking, so it is never saved
    head        D * C per head
LayerNorm, softmax, GELU and bias adds are left out, as in the paper and in FlopCounterMode.
"""
from __future__ import annotations

from .config import ViTConfig

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k train set size [digest 2.7]


def block_macs(cfg: ViTConfig, num_tokens: int) -> int:
    """MACs of one transformer block over num_tokens tokens."""
    n, d, m = num_tokens, cfg.embed_dim, cfg.mlp_hidden
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def macs(cfg: ViTConfig, num_keep: int | None = None) -> int:
    """MACs per sample of one forward pass seeing num_keep patches (None: all) plus every prefix token."""
    k = cfg.num_patches if num_keep is None else int(num_keep)
    if not 1 <= k <= cfg.num_patches:
        raise ValueError(f"num_keep={num_keep} is out of range 1..{cfg.num_patches}")
    n = cfg.num_prefix_tokens + k
    heads = 2 if cfg.head == "token_dist" else 1
    embed = cfg.num_patches * cfg.patch_dim * cfg.embed_dim
    return cfg.depth * block_macs(cfg, n) + embed + heads * cfg.embed_dim * cfg.num_classes


def pflops(macs_per_image: float, epochs: int, images: int = IMAGENET_TRAIN_IMAGES) -> float:
    """Total teacher compute over training in the paper's PFLOPs column: MACs/img x images x epochs / 1e15."""
    return macs_per_image * images * epochs / 1e15


def training_ledger(student: ViTConfig, teacher: ViTConfig, num_keep: int | None) -> dict[str, float]:
    """Per-image training compute of one KD step (MACs): student forward + backward counted as 3x forward
    [digest 2.2, backward = 2x forward], teacher forward full and at num_keep; and the two savings.
    `total_saving` is the paper's "~28% of overall training FLOPs" figure at 50% kept [digest 2.7]."""
    s = macs(student)
    t_full = macs(teacher)
    t_mask = macs(teacher, num_keep)
    return {
        "student_fwd": s,
        "student_fwd_bwd": 3 * s,
        "teacher_full": t_full,
        "teacher_masked": t_mask,
        "teacher_saving": 1.0 - t_mask / t_full,
        "total_full": 3 * s + t_full,
        "total_masked": 3 * s + t_mask,
        "total_saving": 1.0 - (3 * s + t_mask) / (3 * s + t_full),
    }


def counted_macs(fn, *args, **kwargs) -> int:
    """Run fn(*args, **kwargs) under torch's FlopCounterMode and return its total / 2 (FLOPs -> MACs).
    torch 2.14's counter has no formula for the CPU fused attention kernel and counts it as zero; we register
    the standard SDPA count (2 matmuls of b*h*n*n*d MACs each) for it."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() // 2


def cait_macs(num_keep: int | None = None, *, num_patches: int = 196, dim: int = 384, heads: int = 8,
              depth: int = 24, ca_depth: int = 2, patch_dim: int = 3 * 16 * 16, num_classes: int = 1000,
              mlp_ratio: float = 4.0) -> int:
    """MACs of CaiT-S24 (defaults) seeing num_keep patches [digest 2.7, derived formula]: self-attention layers on
    the k patch tokens only, each with talking-heads cost 2 H^2 k^2, then ca_depth class-attention layers
    (CLS query over CLS + k patches) of D^2 + 2(k+1)D^2 + 2(k+1)D + D^2 + 2*mlp_ratio*D^2. The architecture
    itself is not implemented here (see README): this is the cost model behind the paper's CaiT rows."""
    k = num_patches if num_keep is None else int(num_keep)
    if not 1 <= k <= num_patches:
        raise ValueError(f"num_keep={num_keep} is out of range 1..{num_patches}")
    d, m = dim, int(mlp_ratio * dim)
    sa = 4 * k * d * d + 2 * k * k * d + 2 * k * d * m + 2 * heads * heads * k * k
    ca = d * d + 2 * (k + 1) * d * d + 2 * (k + 1) * d + d * d + 2 * d * m
    return depth * sa + ca_depth * ca + num_patches * patch_dim * d + d * num_classes
