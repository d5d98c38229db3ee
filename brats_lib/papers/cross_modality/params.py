"""The parameter schema of ``params/cross_modality/<profile>.yaml`` (see :mod:`brats_lib.params`)."""
from __future__ import annotations

from brats_lib.params import TrainingParams, schema


@schema("cross_modality")
class CrossModalityParams(TrainingParams):
    """Cross-modality feature transition and fusion (Zhang et al., Pattern Recognition 2021)."""

    #: U-Net filters of the five levels (paper 16, 32, 64, 128, 256)
    features: list[int]
    #: training patch and sliding window (paper 128^3; multiples of 16, >= 32 for the discriminator)
    patch_size: list[int]
    #: patches per step (paper 1)
    batch_size: int
    steps_per_epoch: int
    #: epochs of the pre-trainings (CMFT, self-reconstruction) and of each CMFF row (the paper gives none)
    cmft_epochs: int
    cmff_epochs: int
    #: Adam learning rates (paper 1e-4 both)
    cmft_lr: float = 1e-4
    cmff_lr: float = 1e-4
    #: weight of the cycle-consistency loss (Eq. 6, paper 10)
    cycle_lambda: float = 10.0
    #: Ours_voc: the 2D U-Net's training on the offline RGB shapes set (patch_size[:2] images)
    pretrain_2d_epochs: int = 1
    pretrain_2d_steps_per_epoch: int = 10
    pretrain_2d_batch: int = 8
    #: sliding-window overlap, flips of test-time augmentation (the paper uses none), windows per call
    overlap: float = 0.5
    tta: int = 0
    sw_batch_size: int = 2
    #: sliding-window overlap on the real cases of the overlay figure (None: ``overlap``; a
    #: 240 x 240 x 155 case needs ~640 windows of 32^3 at 0.5)
    real_overlap: float | None = None
    #: an epoch is a shuffled pass over the training cases (one patch each, cycling when
    #: steps_per_epoch x batch_size exceeds them), as the paper counts epochs
    epoch_pass: bool = True
