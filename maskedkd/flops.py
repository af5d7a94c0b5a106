"""Multiply-accumulates of one forward pass, and the training-compute ledger of the paper.

Convention [docs/paper.md#flops-model]: 1 MAC = 1 "FLOP", as in DeiT (DeiT-B = 17.6 G). For width D, depth L, MLP hidden
M, n = prefix + kept tokens, P patches of c*p*p values, C classes:
    per block   3nD^2 (qkv) + n^2 D (q k^T) + n^2 D (attn v) + nD^2 (proj) + 2nDM (MLP)
    patch embed P * c p^2 * D, over ALL patches: embedding runs before masking, so it is never saved
    head        D * C per head
CaiT adds talking heads (2 H^2 k^2 per self-attention block over the k patches) and its class-attention blocks
(`class_attn_macs`). LayerNorm, softmax, GELU and bias adds are left out, as in the paper and in FlopCounterMode.
"""
from __future__ import annotations

from .config import ViTConfig, vit_config

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k train set size [docs/paper.md#flops-model]


def block_macs(cfg: ViTConfig, num_tokens: int) -> int:
    """MACs of one transformer block over num_tokens tokens."""
    n, d, m = num_tokens, cfg.embed_dim, cfg.mlp_hidden
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def class_attn_macs(cfg: ViTConfig, num_tokens: int) -> int:
    """MACs of one CaiT class-attention block, the CLS query over num_tokens = 1 + k tokens [docs/paper.md#flops-model]:
    q D^2, k and v 2 n D^2, q k^T and attn v 2 n D, proj D^2, MLP on CLS alone 2 D M."""
    n, d, m = num_tokens, cfg.embed_dim, cfg.mlp_hidden
    return d * d + 2 * n * d * d + 2 * n * d + d * d + 2 * d * m


def macs(cfg: ViTConfig, num_keep: int | None = None) -> int:
    """MACs per sample of one forward pass seeing num_keep patches (None: all) plus every prefix token.
    CaiT [docs/paper.md#flops-model]: depth self-attention blocks on the k patches alone, each plus talking heads' 2
    H^2 k^2
    (proj_l and proj_w mix the (k, k) maps across heads), then class_attn_depth class-attention blocks."""
    k = cfg.num_patches if num_keep is None else int(num_keep)
    if not 1 <= k <= cfg.num_patches:
        raise ValueError(f"num_keep={num_keep} is out of range 1..{cfg.num_patches}")
    heads = 2 if cfg.head == "token_dist" else 1
    embed = cfg.num_patches * cfg.patch_dim * cfg.embed_dim
    if cfg.family == "cait":
        sa = block_macs(cfg, k) + 2 * cfg.num_heads**2 * k * k
        blocks = cfg.depth * sa + cfg.class_attn_depth * class_attn_macs(cfg, 1 + k)
    else:
        blocks = cfg.depth * block_macs(cfg, cfg.num_prefix_tokens + k)
    return blocks + embed + heads * cfg.embed_dim * cfg.num_classes


def pflops(macs_per_image: float, epochs: int, images: int = IMAGENET_TRAIN_IMAGES) -> float:
    """Total teacher compute over training in the paper's PFLOPs column: MACs/img x images x epochs / 1e15."""
    return macs_per_image * images * epochs / 1e15


def training_ledger(student: ViTConfig, teacher: ViTConfig, num_keep: int | None) -> dict[str, float]:
    """Per-image training compute of one KD step (MACs): student forward + backward counted as 3x forward
    [backward = 2x forward: docs/paper.md#figure-1], teacher forward full and at num_keep; and the two savings.
    `total_saving` is the paper's "~28% of overall training FLOPs" figure at 50% kept [docs/paper.md#flops-model]."""
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


def cait_macs(num_keep: int | None = None, cfg: ViTConfig | None = None) -> int:
    """MACs of CaiT-S24 (or the CaiT config cfg) seeing num_keep patches: `macs` for a CaiT config, kept under
    its old name (the paper's CaiT rows [docs/paper.md#flops-model])."""
    return macs(cfg or vit_config("cait_s24_224"), num_keep)
