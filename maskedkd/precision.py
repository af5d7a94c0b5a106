"""Precision and compilation of the step: bf16 autocast where asked, a frozen model's matmul weights cast once, and
Dynamo's graph limit for a keep schedule's compiled steps."""
from __future__ import annotations

import contextlib

import torch

from .attention import Params

PRECISIONS = ("auto", "bf16", "fp32")


def uses_bf16(device_type: str, precision: str) -> bool:
    """bf16 on CUDA (\"auto\") or wherever asked (\"bf16\")."""
    return precision == "bf16" or (precision == "auto" and device_type == "cuda")


def autocast(device_type: str, precision: str):
    """bf16 autocast on CUDA ("auto") or wherever asked ("bf16"); fp32 otherwise."""
    if uses_bf16(device_type, precision):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cast_matmul_weights(params: Params, dtype: torch.dtype = torch.bfloat16) -> Params:
    """A frozen model's matmul weights (every '*.weight' of 2 or more dims: linears, patch filters, talking heads)
    cast once to dtype: what autocast would cast at every step, so the model's outputs under autocast are the same,
    its weights take half the memory and no cast kernel runs per step. Norms, biases, position embeddings and
    tokens stay fp32 (autocast keeps them fp32 too); for a teacher or a fixed scorer, never a trained student."""
    return {k: v.to(dtype) if k.endswith(".weight") and v.ndim >= 2 and v.is_floating_point() else v
            for k, v in params.items()}


def allow_compiled_graphs(count: int) -> None:
    """Let Dynamo keep `count` compiled graphs of the step (one per kept count: a keep schedule has one per distinct
    count) and fail, rather than fall back to eager in silence, past that. Dynamo caches graphs per code object and
    every step shares one (torch.func's wrapper), so its default limit of 8 would leave a schedule's later counts
    uncompiled. Each distinct count costs one compilation."""
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(cfg.recompile_limit, count + 2)
    cfg.fail_on_recompile_limit_hit = True
