"""The parameter schema of ``params/hnfnetv2/<profile>.yaml`` (see :mod:`brats_lib.params`)."""
from __future__ import annotations

from brats_lib.params import TrainingParams, schema


@schema("hnfnetv2")
class HNFNetv2Params(TrainingParams):
    """HNF-Netv2 (Jia et al., BraTS 2021): data, network sizes, training, inference."""

    #: cases kept out of the folds for the ensemble evaluation (Tables 2-3 style; the paper
    #: used the challenge's validation and test sets)
    holdout_cases: int
    #: training patch = sliding window (paper 128^3) and the window stride (paper 32 x 32 x 27)
    patch_size: list[int]
    window_stride: list[int]
    #: centre crop before sliding (paper 176 x 224 x 155); None crops to the brain's box
    inference_crop: list[int] | None
    #: 3D U-Net widths (paper size: 56 112 224 416, see brats_lib.papers.hnfnetv2.networks)
    unet_filters: list[int]
    #: HNF-Net: channels c at scale r (paper 32), residual blocks per branch (2), EMA bases K (256)
    width: int
    blocks: int
    bases: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    warmup_epochs: float
    #: flips for the ensemble's predictions (paper 8) and for the per-fold ablation evaluation
    tta: int
    tta_ablation: int
    #: EM iterations T of the EMA unit (EMANet: 3)
    em_iterations: int = 3
    weight_decay: float = 1e-5
    #: validate on the fold's held-out cases every this many epochs (0 = never; curves only)
    val_every: int = 0
    #: ET volume (voxels) under which ET becomes NCR/NET (paper 200)
    min_et: int = 200
    #: fraction of training crops centred on tumour (the paper's crops are uniform: 0)
    fg_prob: float = 0.0
    augment: bool = True
    #: real cases segmented for the qualitative figure (0 = none), and their flips
    real_tta: int = 1
    #: window stride on the real cases (None: the patch size, i.e. no overlap)
    real_window_stride: list[int] | None = None
    #: windows per network call in sliding-window inference (tiny CPU networks gain from 8)
    sw_batch_size: int = 2
    #: an epoch is a shuffled pass over the training cases (one patch each, cycling when
    #: steps_per_epoch x batch_size exceeds them), as the paper counts epochs
    epoch_pass: bool = True
