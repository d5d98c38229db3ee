"""Jia et al., "HNF-Netv2 for Brain Tumor Segmentation using multi-modal MR Imaging" (BraTS 2021).

* :mod:`~brats_lib.papers.hnfnetv2.networks` - 3D U-Net baseline, HNF-Net (PMF + EMA), + intra-SDE, + inter-SDE (Table 1)
* :mod:`~brats_lib.papers.hnfnetv2.augmentation` - the online augmentation of Section 4.1
* :mod:`~brats_lib.papers.hnfnetv2.params` - the schema of ``params/hnfnetv2/<profile>.yaml``
* :mod:`~brats_lib.papers.hnfnetv2.pipeline` - inputs, loss, training, sliding-window inference, the ensemble predictor, the paper's tables and claims, architecture and EMA figures, and :class:`HNFNetv2Pipeline`
* :mod:`~brats_lib.papers.hnfnetv2.postprocess` - the ET volume rule of Section 4.1 (registered as ``hnfnetv2``)

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import augmentation, networks, params, pipeline, postprocess  # noqa: F401  (registration)
