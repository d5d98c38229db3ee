"""Ma, Tang and Guo, "Multi-Task Deep Supervision on Attention R2U-Net for Brain Tumor Segmentation" (Frontiers in Oncology 2021).

* :mod:`~brats_lib.papers.attention_r2unet_mtds.networks` - the 2D attention R2U-Net (APR modules, SE dropout, attention gates, MTDS heads) and the comparison networks of Table 6
* :mod:`~brats_lib.papers.attention_r2unet_mtds.params` - the schema of ``params/attention_r2unet_mtds/<profile>.yaml``
* :mod:`~brats_lib.papers.attention_r2unet_mtds.paper` - the paper's setup, the rows and titles of Tables 1, 3, 4 and 6, and its claims
* :mod:`~brats_lib.papers.attention_r2unet_mtds.pipeline` - slices, the MTDS loss, training, 3D stacking and post-processing, the per-region scores, :class:`AttentionR2UNetPipeline` and the rows x folds loop
* :mod:`~brats_lib.papers.attention_r2unet_mtds.report` - the notebook's tables and figures: scale, model sizes, Tables 1, 3, 4, 6, training curves, attention-gate maps, SE weights and per-head outputs, predictions

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import networks, paper, params, pipeline, report

__all__ = ["networks", "paper", "params", "pipeline", "report"]
