"""Zhou et al., "One-pass Multi-task Networks with Cross-task Guided Attention for Brain Tumor Segmentation" (IEEE TIP 2020).

* :mod:`~brats_lib.papers.omnet_cga.networks` - the 3D FusionNet backbone: the model cascade, OM-Net, + SE, + CGA and its ablations
* :mod:`~brats_lib.papers.omnet_cga.params` - the schema of ``params/omnet_cga/<profile>.yaml``
* :mod:`~brats_lib.papers.omnet_cga.pipeline` - task regions, curriculum, online data transfer, the multi-task step and loss, overlap-tile inference and task fusion, the paper's tables and claims, and :class:`OMNetPipeline`
* :mod:`~brats_lib.papers.omnet_cga.postprocess` - the two-step post-processing of Section III-D (registered as ``omnet``)

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import networks, params, pipeline, postprocess  # noqa: F401  (registration)
