"""MaskedKD: the teacher sees only the patches the student attends to (arXiv 2302.10494).

    import maskedkd as mkd
    cfg_s, cfg_t = mkd.vit_config("deit_tiny_patch16_224"), mkd.vit_config("deit_small_patch16_224")
    student, teacher = mkd.init_params(cfg_s), mkd.load_checkpoint("deit_small.pth", cfg_t)
    logits, scores = mkd.student_forward(student, x, cfg_s)
    keep = mkd.select_tokens(scores, mkd.keep_count(cfg_s.num_patches, 0.5))
    with torch.no_grad():
        t_logits = mkd.teacher_forward(teacher, x, cfg_t, keep)
    loss = mkd.kd_loss(logits, t_logits, y)
"""
from .ast import (AST_PRESETS, DEIT_SOURCES, adapt_pos_embed, ast_config, ast_from_deit, convert_hf_ast,
                  deit_source_config)
from .attention import block, cls_attention_scores, drop_path
from .checkpoint import load_checkpoint, load_init, read_state_dict, save_checkpoint, save_params
from .config import MAE_PRESETS, PRESETS, ViTConfig, vit_config
from .from_timm import config_from_timm, drop_path_from_timm, params_from_timm
from .hub import Pretrained, is_hub_name, load_pretrained
from .export import hf_ast_files, timm_spec, write_student
from .flops import IMAGENET_TRAIN_IMAGES, block_macs, cait_macs, counted_macs, macs, pflops, training_ledger
from .losses import attention_loss, cross_entropy, kd_divergence, kd_loss, kd_loss_terms, manifold_loss
from .model import (check_params, embed, forward, forward_tokens, gather_patches, head_pair, init_params, param_shapes, run_blocks,
                    student_forward, teacher_forward)
from .patchify import patch_embed, patchify
from .select import (CRITERIA, adaptive_budget, keep_count, keep_schedule, register_criterion, resample_scores,
                     select_tokens)
from .optim import cosine_lr, layer_id, make_optimizer, param_groups
from .precision import cast_matmul_weights
from .step import make_loss_fn, make_train_step
from .view import TeacherOut, TeacherView
from .tome import bipartite_merge, tome_forward, tome_macs

__all__ = [
    "PRESETS", "ViTConfig", "vit_config", "init_params", "param_shapes", "load_checkpoint", "read_state_dict",
    "save_params", "save_checkpoint", "forward", "student_forward", "teacher_forward", "embed", "run_blocks",
    "gather_patches", "block", "cls_attention_scores", "drop_path", "patchify", "patch_embed", "select_tokens",
    "register_criterion", "CRITERIA", "keep_count", "keep_schedule", "resample_scores", "kd_loss", "kd_loss_terms",
    "kd_divergence", "cross_entropy", "macs", "block_macs", "cait_macs", "counted_macs", "pflops", "training_ledger",
    "IMAGENET_TRAIN_IMAGES", "ast_config", "AST_PRESETS", "DEIT_SOURCES", "deit_source_config", "convert_hf_ast",
    "adapt_pos_embed", "ast_from_deit", "make_train_step", "TeacherView", "TeacherOut", "forward_tokens",
    "adaptive_budget", "manifold_loss", "attention_loss", "tome_forward", "tome_macs", "bipartite_merge", "make_loss_fn", "make_optimizer", "cosine_lr",
    "config_from_timm", "params_from_timm", "drop_path_from_timm",
    "MAE_PRESETS", "load_init", "head_pair", "layer_id", "param_groups", "cast_matmul_weights",
    "Pretrained", "is_hub_name", "load_pretrained", "timm_spec", "hf_ast_files", "write_student", "check_params",
]
