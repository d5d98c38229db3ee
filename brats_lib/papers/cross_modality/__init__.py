"""Zhang et al., "Cross-Modality Deep Feature Learning for Brain Tumor Segmentation" (Pattern Recognition 2021).

* :mod:`~brats_lib.papers.cross_modality.networks` - the 3D U-Net generators and branches, Table 1's discriminator, mask-guided and channel attention fusion
* :mod:`~brats_lib.papers.cross_modality.params` - the schema of ``params/cross_modality/<profile>.yaml``
* :mod:`~brats_lib.papers.cross_modality.paper` - the paper's setup, Tables 2 and 4 as published, their titles and the claims of Sections 4.2-4.3
* :mod:`~brats_lib.papers.cross_modality.pipeline` - CMFT (CycleGAN) and the other pre-trainings (run once per fold, shared by the rows), CMFF (fusion with mask-guided attention), inference, and :class:`CrossModalityPipeline`
* :mod:`~brats_lib.papers.cross_modality.report` - the notebook's tables and figures: setup and model sizes, pre-training curves and translations, Tables 2 and 4 beside the paper's, per-region intervals, training curves, branch masks and overlays

Importing the package registers its networks, post-processing, parameter schema and pipeline.
"""
from . import networks, paper, params, pipeline, report  # noqa: F401  (registration)
