"""The parameter schema of ``params/omnet_cga/<profile>.yaml`` (see :mod:`brats_lib.params`)."""
from __future__ import annotations

from brats_lib.params import TrainingParams, schema


@schema("omnet_cga")
class OMNetParams(TrainingParams):
    """OM-Net + CGA (Zhou et al., IEEE TIP 2020): data, network sizes, curriculum, inference."""

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
    #: voxels by which the tumour is dilated: task 2's sampling region while training and the
    #: region task 2 relabels at inference (paper 5, on BraTS' 1 mm grid)
    dilation: int = 5
