"""Zhang et al., "Cross-Modality Deep Feature Learning for Brain Tumor Segmentation" (Pattern Recognition 2021).

* :mod:`~brats_lib.papers.cross_modality.networks` - the 3D U-Net generators and branches, Table 1's discriminator, mask-guided and channel attention fusion
* :mod:`~brats_lib.papers.cross_modality.params` - the schema of ``params/cross_modality/<profile>.yaml``
* :mod:`~brats_lib.papers.cross_modality.pipeline` - CMFT (CycleGAN) and the other pre-trainings, CMFF (fusion with mask-guided attention), inference, the paper's tables and claims, and :class:`CrossModalityPipeline`

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import networks, params, pipeline  # noqa: F401  (registration)
