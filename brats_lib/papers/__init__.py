"""The five papers, one package each (``brats_lib/papers/<notebook>/``).

Each holds its paper's networks (``networks``), parameter schema (``params``), pipeline
(``pipeline``: data, loss, training, inference, the paper's numbers and claims, and a
:class:`~brats_lib.pipeline.Pipeline`), and where the paper has them its post-processing
(``postprocess``) and augmentation (``augmentation``):

=========================  =====================================================================
package                    paper
=========================  =====================================================================
``optimized_unet``         Futrega et al., Optimized U-Net (BraTS 2021)
``hnfnetv2``               Jia et al., HNF-Netv2 (BraTS 2021)
``attention_r2unet_mtds``  Ma et al., multi-task deep supervision on attention R2U-Net (2021)
``omnet_cga``              Zhou et al., OM-Net + cross-task guided attention (IEEE TIP 2020)
``cross_modality``         Zhang et al., cross-modality deep feature learning (PR 2021)
=========================  =====================================================================

Papers import the stage modules of :mod:`brats_lib` (data, sampling, training, inference,
metrics, ...), never each other; importing this package registers all five. Each
``paper.py`` also names its report's headline table and what the notebook teaches
(``HEADLINE``, ``LESSON``), collected here for ``reports/README.md``.
"""
from . import attention_r2unet_mtds, cross_modality, hnfnetv2, omnet_cga, optimized_unet  # noqa: F401

PAPERS = ("optimized_unet", "hnfnetv2", "attention_r2unet_mtds", "omnet_cga", "cross_modality")
_PACKAGES = {"optimized_unet": optimized_unet, "hnfnetv2": hnfnetv2, "attention_r2unet_mtds": attention_r2unet_mtds,
             "omnet_cga": omnet_cga, "cross_modality": cross_modality}
#: each paper notebook's headline table and lesson (its ``paper.HEADLINE`` / ``paper.LESSON``)
HEADLINES = {name: pkg.paper.HEADLINE for name, pkg in _PACKAGES.items()}
LESSONS = {name: pkg.paper.LESSON for name, pkg in _PACKAGES.items()}
