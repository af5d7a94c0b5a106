"""ImageNet-1k configs: the paper's DeiT recipe [digest 3], 300 epochs, global batch 1024.

    torchrun --nproc_per_node=8 -m maskedkd.train deit_tiny_deit_small_maskedkd50 \\
        data_path=/path/to/imagenet teacher=/path/to/deit_small_patch16_224-cd65a155.pth

Expected (paper table 1): DeiT-Ti no KD 72.0, + DeiT-S logit KD 75.0, + MaskedKD 50% 75.2.
"""
from . import TrainConfig, register

# The student is evaluated every epoch as DeiT does; the masked teacher (a diagnostic: the teacher's accuracy on
# what the student shows it) every 10 epochs and after the last.
BASE = TrainConfig(data="imagefolder", model="deit_tiny_patch16_224", epochs=300, batch_size=1024, lr=5e-4,
                   drop_path=0.1, warmup_epochs=5, num_workers=10, eval_teacher_every=10)

CMD = "torchrun --nproc_per_node=8 -m maskedkd.train {} data_path=/path/to/imagenet{}"
T_S = " teacher=/path/to/deit_small_patch16_224-cd65a155.pth"
T_B = " teacher=/path/to/deit_base_patch16_224-b5f2ef4d.pth"
register(BASE.replace(name="deit_tiny_nokd"),
         doc=f"`{CMD.format('deit_tiny_nokd', '')}`. Expected 72.0 (table 1, DeiT-Ti, no distillation).")
register(BASE.replace(name="deit_tiny_deit_small_kd", teacher_model="deit_small_patch16_224"),
         doc=f"`{CMD.format('deit_tiny_deit_small_kd', T_S)}`. Expected 75.0 (table 1, logit KD).")
register(BASE.replace(name="deit_tiny_deit_small_maskedkd50", teacher_model="deit_small_patch16_224", num_keep=98),
         doc=f"`{CMD.format('deit_tiny_deit_small_maskedkd50', T_S)}`. Expected 75.2 (table 1, +MaskedKD 50%).")
register(BASE.replace(name="deit_small_deit_base_maskedkd50", model="deit_small_patch16_224",
                      teacher_model="deit_base_patch16_224", num_keep=98),
         doc=f"`{CMD.format('deit_small_deit_base_maskedkd50', T_B)}`. Expected 81.0 (table 1, DeiT-S +MaskedKD 50%).")
