"""ImageNet-1k configs: the paper's DeiT recipe [digest 3], 300 epochs, global batch 1024.

    torchrun --nproc_per_node=8 -m maskedkd.train deit_tiny_deit_small_maskedkd50 \\
        data_path=/path/to/imagenet teacher=/path/to/deit_small_patch16_224-cd65a155.pth

Expected (paper table 1): DeiT-Ti no KD 72.0, + DeiT-S logit KD 75.0, + MaskedKD 50% 75.2.
"""
from . import TrainConfig, register

BASE = TrainConfig(data="imagenet", model="deit_tiny_patch16_224", epochs=300, batch_size=1024, lr=5e-4,
                   drop_path=0.1, warmup_epochs=5, num_workers=10)
BASE = BASE.replace(data="imagefolder")

register(BASE.replace(name="deit_tiny_nokd"))
register(BASE.replace(name="deit_tiny_deit_small_kd", teacher_model="deit_small_patch16_224"))
register(BASE.replace(name="deit_tiny_deit_small_maskedkd50", teacher_model="deit_small_patch16_224",
                      num_keep=98))
register(BASE.replace(name="deit_small_deit_base_maskedkd50", model="deit_small_patch16_224",
                      teacher_model="deit_base_patch16_224", num_keep=98))
