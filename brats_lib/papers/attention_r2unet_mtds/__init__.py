"""Ma, Tang and Guo, "Multi-Task Deep Supervision on Attention R2U-Net for Brain Tumor Segmentation" (Frontiers in Oncology 2021).

* :mod:`~brats_lib.papers.attention_r2unet_mtds.networks` - the 2D attention R2U-Net (APR modules, SE dropout, attention gates, MTDS heads) and the comparison networks of Table 6
* :mod:`~brats_lib.papers.attention_r2unet_mtds.params` - the schema of ``params/attention_r2unet_mtds/<profile>.yaml``
* :mod:`~brats_lib.papers.attention_r2unet_mtds.pipeline` - slices, the MTDS loss, training, 3D stacking and post-processing, the per-region scores, the paper's tables and claims, and :class:`AttentionR2UNetPipeline`

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import networks, params, pipeline  # noqa: F401  (registration)
