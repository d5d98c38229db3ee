"""Post-processing of HNF-Netv2 (Jia et al., BraTS 2021), Section 4.1: too little ET becomes
NCR. Registered as ``"hnfnetv2"`` (the name predictor files use)."""
from __future__ import annotations

import numpy as np

from brats_lib import labels as L
from brats_lib.postprocess import register


@register("hnfnetv2")
def small_et_to_ncr(labels: np.ndarray, probs: np.ndarray | None = None, min_et: int = 200) -> np.ndarray:
    """The rule of Jia et al. (HNF-Netv2, BraTS 2021), Section 4.1, after Isensee et al.:
    when fewer than ``min_et`` voxels are predicted ET, all of them become NCR/NET (they
    stay in the tumour core). ``probs`` is accepted for a uniform signature and unused."""
    out = labels.copy()
    et = out == L.ET
    if 0 < int(et.sum()) < min_et:
        out[et] = L.NCR
    return out
