"""Futrega et al., "Optimized U-Net for Brain Tumor Segmentation" (BraTS 2021, NVIDIA).

* :mod:`~brats_lib.papers.optimized_unet.networks` - the U-Net variants of Tables 1-3 (baseline, attention, residual, DropBlock, deeper, wider), UNETR and SegResNetVAE rows registered by name
* :mod:`~brats_lib.papers.optimized_unet.params` - the schema of ``params/optimized_unet/<profile>.yaml``
* :mod:`~brats_lib.papers.optimized_unet.pipeline` - inputs, loss (Dice + BCE, deep supervision), training with the learning-rate search, inference, threshold and voxel-count searches, the predictor export, the paper's tables and claims, and :class:`OptimizedUNetPipeline`
* :mod:`~brats_lib.papers.optimized_unet.postprocess` - the ET rule of Section 2.5 (registered as ``optimized_unet``)

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import networks, params, pipeline, postprocess  # noqa: F401  (registration)
