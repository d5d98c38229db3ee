"""Jia et al., "HNF-Netv2 for Brain Tumor Segmentation using multi-modal MR Imaging" (BraTS 2021).

* :mod:`~brats_lib.papers.hnfnetv2.networks` - 3D U-Net baseline, HNF-Net (PMF + EMA), + intra-SDE, + inter-SDE (Table 1)
* :mod:`~brats_lib.papers.hnfnetv2.augmentation` - the online augmentation of Section 4.1
* :mod:`~brats_lib.papers.hnfnetv2.params` - the schema of ``params/hnfnetv2/<profile>.yaml``
* :mod:`~brats_lib.papers.hnfnetv2.paper` - the paper's rows, published numbers (Tables 1-3), Section 4.1 setup and claims
* :mod:`~brats_lib.papers.hnfnetv2.pipeline` - inputs, loss, training, sliding-window inference, the Table 1 cross-validation and the held-out ensemble, the predictor file, and :class:`HNFNetv2Pipeline`
* :mod:`~brats_lib.papers.hnfnetv2.postprocess` - the ET volume rule of Section 4.1 (registered as ``hnfnetv2``)
* :mod:`~brats_lib.papers.hnfnetv2.report` - the notebook's tables and figures: scale table, model sizes, architecture, Tables 1-3, training curves, EMA attention, predictions

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import augmentation, networks, paper, params, pipeline, postprocess, report

__all__ = ["augmentation", "networks", "paper", "params", "pipeline", "postprocess", "report"]
