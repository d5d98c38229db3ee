"""Futrega et al., "Optimized U-Net for Brain Tumor Segmentation" (BraTS 2021, NVIDIA).

* :mod:`~brats_lib.papers.optimized_unet.networks` - the U-Net variants of Tables 1-3 (baseline, attention, residual, DropBlock, deeper, wider), UNETR and SegResNetVAE rows registered by name
* :mod:`~brats_lib.papers.optimized_unet.params` - the schema of ``params/optimized_unet/<profile>.yaml``
* :mod:`~brats_lib.papers.optimized_unet.paper` - the paper's published numbers (Tables 1-4), the rows and titles of its tables, and its claims
* :mod:`~brats_lib.papers.optimized_unet.pipeline` - inputs, loss (Dice + BCE, deep supervision), training with the learning-rate search, inference, threshold and voxel-count searches, the predictor export, :class:`OptimizedUNetPipeline` and the notebook's rows x folds loop (:func:`cross_validate_rows`)
* :mod:`~brats_lib.papers.optimized_unet.postprocess` - the ET rule of Section 2.5 (registered as ``optimized_unet``)
* :mod:`~brats_lib.papers.optimized_unet.report` - the notebook's tables and figures from its results: scale, model sizes, Tables 1-4, the threshold and voxel-count searches, training curves, predictions

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import networks, paper, params, pipeline, postprocess, report  # noqa: F401  (registration)
