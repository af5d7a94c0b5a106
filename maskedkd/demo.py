"""One MaskedKD step on toy models, printing what the teacher was shown and the compute it saved.

    python -m maskedkd.demo
"""
from __future__ import annotations

import argparse

import torch

from .config import ViTConfig
from .flops import macs, training_ledger
from .losses import kd_loss_terms
from .model import init_params, student_forward, teacher_forward
from .select import keep_count, select_tokens


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-ratio", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    student_cfg = ViTConfig(name="toy-student", img_size=32, patch_size=4, num_classes=10, embed_dim=64,
                            depth=3, num_heads=2)
    teacher_cfg = student_cfg.replace(name="toy-teacher", embed_dim=128, depth=6, num_heads=4)
    student = {k: v.requires_grad_() for k, v in init_params(student_cfg, seed=0).items()}
    teacher = init_params(teacher_cfg, seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)

    logits, scores = student_forward(student, x, student_cfg)          # full image, (b C), (b n)
    k = keep_count(student_cfg.num_patches, args.keep_ratio)
    keep = select_tokens(scores, k)                                      # (b k) top-k by CLS attention
    with torch.no_grad():
        t_logits = teacher_forward(teacher, x, teacher_cfg, keep)        # CLS + k patches only
    terms = kd_loss_terms(logits, t_logits, y)
    terms["loss"].backward()

    led = training_ledger(student_cfg, teacher_cfg, k)
    print(f"student {student_cfg.embed_dim}d x {student_cfg.depth}, teacher {teacher_cfg.embed_dim}d x "
          f"{teacher_cfg.depth}, {student_cfg.num_patches} patches, teacher saw {k} (+CLS) per image")
    print(f"sample 0 kept patches: {sorted(keep[0].tolist())}")
    print(f"loss {terms['loss'].item():.4f} = 0.5 * CE {terms['ce'].item():.4f} + 0.5 * KL {terms['kd'].item():.4f};"
          f" student grad norm {torch.stack([p.grad.norm() for p in student.values()]).norm():.4f}")
    print(f"teacher MACs/img: full {macs(teacher_cfg) / 1e6:.2f} M, masked {led['teacher_masked'] / 1e6:.2f} M "
          f"-> teacher FLOPs saved {100 * led['teacher_saving']:.1f}%, training FLOPs saved "
          f"{100 * led['total_saving']:.1f}%")


if __name__ == "__main__":
    main()
