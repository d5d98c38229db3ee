"""The parameter schema of ``params/optimized_unet/<profile>.yaml`` (see :mod:`brats_lib.params`)."""
from __future__ import annotations

from dataclasses import field

from brats_lib.params import TrainingParams, schema


@schema("optimized_unet")
class OptimizedUNetParams(TrainingParams):
    """Optimized U-Net (NVIDIA, BraTS 2021): data, scaling, training, inference, searches."""

    #: training patch = sliding window (paper 128^3)
    patch_size: list[int]
    #: U-Net filters: the nnU-Net baseline (depth d) and the widened list (depth d + 1)
    base_filters: list[int]
    wide_filters: list[int]
    #: UNETR and SegResNetVAE sizes (paper: 16 / 768 / 3072 / 12 and 32 / 128)
    unetr_feature_size: int
    unetr_hidden_size: int
    unetr_mlp_dim: int
    unetr_heads: int
    segresnet_filters: int
    vae_nz: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    #: one run per rate; a fold keeps the rate with the best validation Dice (paper: 5e-4, 7e-4, 9e-4)
    learning_rates: list[float]
    warmup_steps: int
    #: flips of the test-time augmentation for the final model's predictions (paper: 8)
    tta: int
    #: flips for the per-case evaluation of every ablation row
    tta_ablation: int
    #: real cases segmented for the qualitative figure (0 = none), and their flips
    real_cases: int = 2
    real_tta: int = 1
    drop_block_size: int = 5
    #: up-sample the deep-supervision heads and divide the loss by 1.75 (NVIDIA's code) instead of
    #: down-sampling the labels (the paper)
    ds_upsample: bool = False
    vae_weight: float = 0.1
    #: "brain" (the paper's foreground) or "all_positive" (NVIDIA's code)
    onehot_mode: str = "brain"
    #: regions -> labels: "nested" (the paper, Section 2.5), "nvidia" (NVIDIA's to_lbl: TC and
    #: ET gated by WT only) or "overwrite" (nnU-Net)
    label_rule: str = "nested"
    #: test-time flips of the whole volume ("image", the paper) or of each window ("window")
    tta_mode: str = "image"
    augment: bool = True
    #: augment batches on the training device (tensor ops, as NVIDIA's DALI pipeline) instead
    #: of per patch in the loader; trilinear instead of cubic zoom
    device_augment: bool = False
    #: torch.compile (CUDA only); ``channels_last`` (NDHWC, common to every paper) applies to
    #: the convolutional U-Nets only
    compile: bool = False
    fg_prob: float = 0.4
    weight_decay: float = 1e-4
    keep_best: int = 2
    #: validate (and consider for the best checkpoints) every ``val_every`` epochs and at the
    #: last (the paper: every epoch)
    val_every: int = 1
    overlap: float = 0.5
    threshold_grid: list[float] = field(default_factory=lambda: [round(0.3 + 0.05 * i, 2) for i in range(9)])
    min_total_grid: list[int] = field(default_factory=lambda: list(range(0, 101)))
    #: an epoch is a shuffled pass over the training cases (one patch each, cycling when
    #: steps_per_epoch x batch_size exceeds them), as the paper counts epochs
    epoch_pass: bool = True
