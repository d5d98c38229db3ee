"""Parameter schemas of the notebooks (one dataclass each; see :mod:`brats_lib.params`).

Every key of ``params/<notebook>/<profile>.yaml`` is declared here with its type;
a key without a default is required.
"""
from __future__ import annotations

from dataclasses import field
from typing import Any

from .params import FileName, schema


@schema("00_data_and_metrics")
class PrimerParams:
    """The data and metrics primer."""

    seed: int
    #: phantom cases generated for the data demo (ignored when ``data_dir`` is set)
    phantom_cases: int
    phantom_shape: list[int] = field(default_factory=lambda: [96, 96, 96])
    #: a real BraTS folder (any supported layout); None uses phantoms
    data_dir: str | None = None
    #: folder of real BraTS-space test cases shown beside the phantom; skipped if absent
    real_dir: str | None = "../shared/data/real"
    #: which algorithm outputs of the real cases are scored against the fusion
    algorithms: list[str] = field(default_factory=lambda: ["hnfnetv1-20", "isen-20", "sanet0-20", "scan-20", "yixinmpl-20"])
    #: how many prediction/reference pairs the HD95 library comparison uses
    hd95_pairs: int = 10


@schema("optimized_unet")
class OptimizedUNetParams:
    """Optimized U-Net (NVIDIA, BraTS 2021): data, scaling, training, inference, searches."""

    seed: int
    #: phantom cases (ignored when ``data_dir`` is set)
    phantom_cases: int
    phantom_shape: list[int]
    #: name of the fixed split file ``params/splits/<name>.json`` (created on first use)
    splits: FileName
    #: folds of the split file, and how many of them are trained
    n_folds: int
    folds: int
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
    data_dir: str | None = None
    real_dir: str | None = "../shared/data/real"
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
    #: NDHWC weights and inputs, and torch.compile (CUDA only)
    channels_last: bool = False
    compile: bool = False
    fg_prob: float = 0.4
    weight_decay: float = 1e-4
    keep_best: int = 2
    #: validate (and consider for the best checkpoints) every ``val_every`` epochs and at the
    #: last (the paper: every epoch)
    val_every: int = 1
    amp: bool = True
    num_workers: int = 0
    progress: bool = True
    overlap: float = 0.5
    threshold_grid: list[float] = field(default_factory=lambda: [round(0.3 + 0.05 * i, 2) for i in range(9)])
    min_total_grid: list[int] = field(default_factory=lambda: list(range(0, 101)))
    #: an epoch is a shuffled pass over the training cases (one patch each, cycling when
    #: steps_per_epoch x batch_size exceeds them), as the paper counts epochs
    epoch_pass: bool = True


@schema("hnfnetv2")
class HNFNetv2Params:
    """HNF-Netv2 (Jia et al., BraTS 2021): data, network sizes, training, inference."""

    seed: int
    #: phantom cases (ignored when ``data_dir`` is set)
    phantom_cases: int
    phantom_shape: list[int]
    #: cases kept out of the folds for the ensemble evaluation (Tables 2-3 style; the paper
    #: used the challenge's validation and test sets)
    holdout_cases: int
    #: name of the fixed split file ``params/splits/<name>.json`` (created on first use)
    splits: FileName
    #: folds of the split file, and how many of them are trained
    n_folds: int
    folds: int
    #: training patch = sliding window (paper 128^3) and the window stride (paper 32 x 32 x 27)
    patch_size: list[int]
    window_stride: list[int]
    #: centre crop before sliding (paper 176 x 224 x 155); None crops to the brain's box
    inference_crop: list[int] | None
    #: 3D U-Net widths (paper size: 56 112 224 416, see brats_lib.models.hnfnet)
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
    data_dir: str | None = None
    real_dir: str | None = "../shared/data/real"
    #: real cases segmented for the qualitative figure (0 = none), and their flips
    real_cases: int = 1
    real_tta: int = 1
    #: window stride on the real cases (None: the patch size, i.e. no overlap)
    real_window_stride: list[int] | None = None
    #: windows per network call in sliding-window inference (tiny CPU networks gain from 8)
    sw_batch_size: int = 2
    amp: bool = True
    num_workers: int = 0
    progress: bool = True
    #: an epoch is a shuffled pass over the training cases (one patch each, cycling when
    #: steps_per_epoch x batch_size exceeds them), as the paper counts epochs
    epoch_pass: bool = True


@schema("attention_r2unet_mtds")
class AttentionR2UNetParams:
    """Multi-task deep supervision on attention R2U-Net (Ma et al. 2021): data, sizes, training."""

    seed: int
    #: phantom cases (ignored when ``data_dir`` is set)
    phantom_cases: int
    phantom_shape: list[int]
    #: name of the fixed split file ``params/splits/<name>.json`` (created on first use)
    splits: FileName
    n_folds: int
    folds: int
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
    data_dir: str | None = None
    real_dir: str | None = "../shared/data/real"
    real_cases: int = 1
    amp: bool = True
    num_workers: int = 0
    progress: bool = True


@schema("omnet_cga")
class OMNetParams:
    """OM-Net + CGA (Zhou et al., IEEE TIP 2020): data, network sizes, curriculum, inference."""

    seed: int
    #: phantom cases (ignored when ``data_dir`` is set)
    phantom_cases: int
    phantom_shape: list[int]
    #: name of the fixed split file ``params/splits/<name>.json`` (created on first use)
    splits: FileName
    n_folds: int
    folds: int
    #: feature maps per level of the FusionNet backbone (paper 32, 64, 128, 256)
    features: list[int]
    #: training patch (paper 32 x 32 x 16) and the central block kept per tile (paper 20 x 20 x 5)
    patch_size: list[int]
    tile_centre: list[int]
    #: patches per task per step (paper 20)
    batch_size: int
    steps_per_epoch: int
    #: epochs of the curriculum's three steps (paper 1, 1, 18) and of each cascade network (20)
    stage_epochs: list[int]
    mc_epochs: int
    lr: float
    #: the learning rate is halved every this many epochs (paper 4)
    lr_step_epochs: int
    #: a curriculum stage (but the last) ends early when its newest task's epoch loss falls by less
    #: than this fraction (the paper: "until the loss flattens"; 0 = exactly stage_epochs, which
    #: were 1 and 1 in the paper's runs); the last stage takes the remaining epochs
    plateau: float = 0.0
    #: "sgd" (the paper: momentum 0.99) or "adam" (the cpu profile's few dozen steps)
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    #: kept centre of the tiles on real cases (None: tile_centre; the cpu profile keeps whole
    #: patches there, a 240 x 240 x 155 case otherwise needs ~1800 tiles per network)
    real_tile_centre: list[int] | None = None
    #: post-processing: tau_VOL = min(tau_max, tau_fraction * V_max) (notebooks/papers.md's guess 2000, 0.1)
    #: and the per-component ET volume under which K-means may run (paper 1000)
    tau_max: float = 2000
    tau_fraction: float = 0.1
    et_max_component: int = 1000
    #: OM-Net + CGA* (Section V-C): fold models of OM-Net + CGA on this many extra folds,
    #: ensembled on the held-out cases (0 = skip; paper 10)
    ensemble_folds: int = 0
    holdout_cases: int = 0
    #: tiles per network call at inference
    tile_batch: int = 8
    data_dir: str | None = None
    real_dir: str | None = "../shared/data/real"
    real_cases: int = 1
    amp: bool = True
    num_workers: int = 0
    progress: bool = True
    #: the cascade's third network trains this fraction of steps_per_epoch per epoch
    #: (Section IV-C: 400k, 400k and 200k patches for the three tasks)
    task3_fraction: float = 0.5
    #: fraction of task 1's patches centred on the tumour (dilated) instead of a uniform brain
    #: voxel (paper 0: "randomly sample training patches within the brain"; at the cpu profile's
    #: few hundred steps the tumour, ~1 % of the brain, is otherwise never predicted)
    task1_tumour_fraction: float = 0.0
    #: weight of the tumour classes in the cross-entropy (paper 1, plain SoftmaxWithLoss)
    tumour_weight: float = 1.0
    #: weight of ET in task 3's cross-entropy (None: tumour_weight; paper 1)
    et_weight: float | None = None


@schema("cross_modality")
class CrossModalityParams:
    """Cross-modality feature transition and fusion (Zhang et al., Pattern Recognition 2021)."""

    seed: int
    #: phantom cases (ignored when ``data_dir`` is set)
    phantom_cases: int
    phantom_shape: list[int]
    #: name of the fixed split file ``params/splits/<name>.json`` (created on first use)
    splits: FileName
    n_folds: int
    folds: int
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
    data_dir: str | None = None
    real_dir: str | None = "../shared/data/real"
    real_cases: int = 1
    #: sliding-window overlap on the real cases of the overlay figure (None: ``overlap``; a
    #: 240 x 240 x 155 case needs ~640 windows of 32^3 at 0.5)
    real_overlap: float | None = None
    amp: bool = True
    num_workers: int = 0
    progress: bool = True
    #: an epoch is a shuffled pass over the training cases (one patch each, cycling when
    #: steps_per_epoch x batch_size exceeds them), as the paper counts epochs
    epoch_pass: bool = True


@schema("comparison")
class ComparisonParams:
    """Cross-paper comparison: every paper's proposed model and a plain 3D U-Net on the same folds."""

    seed: int
    #: phantom cases (ignored when ``data_dir`` is set)
    phantom_cases: int
    phantom_shape: list[int]
    #: name of the fixed split file ``params/splits/<name>.json`` shared by every method
    splits: FileName
    n_folds: int
    folds: int
    #: labels of :data:`brats_lib.comparison.METHODS` to train, in table order
    methods: list[str]
    #: per method label, values replacing its paper profile's (same profile name as this one)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: test-time flips of the whole volume, the same for every method (1, 4 or 8)
    tta: int = 1
    #: share of each fold's training cases held back for the methods' own selections
    #: (learning rate, checkpoints); every method trains on the rest
    selection_fraction: float = 0.2
    #: measure peak memory on this many validation cases per method (0 = skip; the CPU
    #: profiler slows inference down)
    memory_cases: int = 1
    data_dir: str | None = None
    real_dir: str | None = "../shared/data/real"
    progress: bool = True
