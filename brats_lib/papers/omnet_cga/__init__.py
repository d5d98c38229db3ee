"""Zhou et al., "One-pass Multi-task Networks with Cross-task Guided Attention for Brain Tumor Segmentation" (IEEE TIP 2020).

* :mod:`~brats_lib.papers.omnet_cga.networks` - the 3D FusionNet backbone: the model cascade, OM-Net, + SE, + CGA and its ablations
* :mod:`~brats_lib.papers.omnet_cga.params` - the schema of ``params/omnet_cga/<profile>.yaml``
* :mod:`~brats_lib.papers.omnet_cga.paper` - the paper's setup at its size, Table I's recovered numbers and parameter counts, and the claims of Section V-A
* :mod:`~brats_lib.papers.omnet_cga.pipeline` - task regions, curriculum, online data transfer, the multi-task step and loss, overlap-tile inference and task fusion, and :class:`OMNetPipeline`
* :mod:`~brats_lib.papers.omnet_cga.postprocess` - the two-step post-processing of Section III-D (registered as ``omnet``)
* :mod:`~brats_lib.papers.omnet_cga.ensemble` - OM-Net + CGA*: the fold ensemble of Section V-C, trained and evaluated on held-out cases
* :mod:`~brats_lib.papers.omnet_cga.report` - the notebook's tables and figures: scale table, model sizes, task regions, Table I (paper vs ours, per region), curriculum, CSCI channels (Fig. 6), qualitative comparison (Fig. 7), inference time

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import ensemble, networks, paper, params, pipeline, postprocess, report

__all__ = ["ensemble", "networks", "paper", "params", "pipeline", "postprocess", "report"]
