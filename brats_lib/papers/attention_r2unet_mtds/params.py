"""The parameter schema of ``params/attention_r2unet_mtds/<profile>.yaml`` (see :mod:`brats_lib.params`)."""
from __future__ import annotations

from brats_lib.params import TrainingParams, schema


@schema("attention_r2unet_mtds")
class AttentionR2UNetParams(TrainingParams):
    """Multi-task deep supervision on attention R2U-Net (Ma et al. 2021): data, sizes, training."""

    #: centre crop of every axial slice (paper 144 x 176), each size divisible by 8
    crop: list[int]
    #: kernels of the first residual unit (paper 32) and of the comparison networks
    base: int
    #: dropout on the SE channel weights (the paper does not give it)
    se_dropout: float
    epochs: int
    batch_size: int
    lr: float
    #: post-processing: drop components under this fraction of the largest (paper 1/10)
    post_fraction: float = 0.1
    augment: bool = True
