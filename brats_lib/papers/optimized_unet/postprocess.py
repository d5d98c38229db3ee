"""Post-processing of the Optimized U-Net (Futrega et al., BraTS 2021), Section 2.5: small or
uncertain ET becomes NCR. Registered as ``"optimized_unet"`` (the name predictor files use)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from brats_lib import labels as L
from brats_lib.postprocess import register

#: channel of the ET probability in region-based outputs (WT, TC, ET)
ET_CHANNEL = L.REGION_CHANNELS.index("ET")


@register("optimized_unet")
def remove_small_et(labels: np.ndarray, probs: np.ndarray, min_component: int = 16, min_total: int = 73,
                   max_mean_prob: float = 0.9) -> np.ndarray:
    """The ET rule of Futrega et al. (Optimized U-Net, BraTS 2021), Section 2.5.

    1. Every ET connected component (26-connectivity) of fewer than ``min_component``
       voxels whose mean ET probability is below ``max_mean_prob`` becomes NCR.
    2. Then, if fewer than ``min_total`` ET voxels remain and their mean ET probability
       is below ``max_mean_prob``, all ET becomes NCR.

    Relabelled voxels stay in the tumour core. ``probs``: (3, ...) WT, TC, ET probabilities.
    """
    out = labels.copy()
    et = out == L.ET
    if not et.any():
        return out
    p_et = probs[ET_CHANNEL]
    if min_component > 0:
        comp, n = ndimage.label(et, structure=np.ones((3,) * et.ndim, bool))
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        means = ndimage.mean(p_et, comp, index=np.arange(1, n + 1)) if n else np.zeros(0)
        small = np.zeros(n + 1, bool)
        small[1:] = (sizes[1:] < min_component) & (np.asarray(means) < max_mean_prob)
        out[small[comp]] = L.NCR
        et = out == L.ET
    total = int(et.sum())
    if 0 < total < min_total and float(p_et[et].mean()) < max_mean_prob:
        out[et] = L.NCR
    return out


def et_summary(labels: np.ndarray, probs: np.ndarray) -> tuple[int, float]:
    """(ET voxel count, mean ET probability over them) - what rule 2 of
    :func:`remove_small_et` looks at; (0, 0.0) without ET."""
    et = labels == L.ET
    n = int(et.sum())
    return n, float(probs[ET_CHANNEL][et].mean()) if n else 0.0
