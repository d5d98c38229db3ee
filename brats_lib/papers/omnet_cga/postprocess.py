"""The two-step post-processing of OM-Net + CGA (Zhou et al., IEEE TIP 2020), Section III-D.
Registered as ``"omnet"``."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from brats_lib import labels as L
from brats_lib.postprocess import register


def tumour_threshold(volumes: np.ndarray, tau_max: float = 2000, tau_fraction: float = 0.1) -> float:
    """tau_VOL of Zhou et al. (OM-Net), Section III-D: min(tau_max, tau_fraction * V_max),
    V_max the largest connected tumour volume (voxels). The text lost the formula's
    numbers; ``notebooks/papers.md`` gives min(2000, 0.1 V_max) as the best guess."""
    return float(min(tau_max, tau_fraction * volumes.max())) if volumes.size else 0.0


@register("omnet")
def two_step(labels: np.ndarray, image: np.ndarray, tau_max: float = 2000, tau_fraction: float = 0.1,
          et_max_component: int = 1000, et_ratio: float = 0.1, et_ratio_component: float = 0.05,
          t1ce_channel: int = 1, seed: int = 0) -> np.ndarray:
    """The two-step post-processing of Zhou et al. (OM-Net + CGA, IEEE TIP 2020), Section III-D.

    1. Connected tumour components (26-connectivity) smaller than
       :func:`tumour_threshold` are removed.
    2. If vol_e / vol_t < ``et_ratio`` over the case, then in each component n with
       vol_e(n) / vol_t(n) < ``et_ratio_component`` and vol_e(n) < ``et_max_component``,
       its ED voxels are split in two by K-means on their intensities (the four
       sequences, z-scored inside the brain); the group with the lower mean T1c becomes
       NCR/NET. ET and the whole tumour are unchanged by this step.

    ``image``: the raw (4, H, W, D) case (T1c at ``t1ce_channel``).
    """
    from scipy.cluster.vq import kmeans2

    from brats_lib.preprocess import zscore

    out = labels.copy()
    comp, n = ndimage.label(out > 0, structure=np.ones((3,) * out.ndim, bool))
    if n == 0:
        return out
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    tau = tumour_threshold(sizes[1:], tau_max, tau_fraction)
    small = np.zeros(n + 1, bool)
    small[1:] = sizes[1:] < tau
    out[small[comp]] = L.BACKGROUND
    comp[small[comp]] = 0
    vol_t = int((out > 0).sum())
    vol_e = int((out == L.ET).sum())
    if vol_t == 0 or vol_e / vol_t >= et_ratio:
        return out
    feats = None
    for k in np.flatnonzero(~small[1:]) + 1:
        here = comp == k
        e_n, t_n = int((out[here] == L.ET).sum()), int(here.sum())
        ed = here & (out == L.ED)
        if e_n / t_n >= et_ratio_component or e_n >= et_max_component or ed.sum() < 2:
            continue
        if feats is None:
            feats = zscore(image)
        x = feats[:, ed].T.astype(np.float64)
        _, group = kmeans2(x, 2, minit="++", seed=seed)
        if len(np.unique(group)) < 2:
            continue
        t1ce = x[:, t1ce_channel]
        darker = int(np.argmin([t1ce[group == g].mean() for g in (0, 1)]))
        idx = np.flatnonzero(ed.ravel())[group == darker]
        out.ravel()[idx] = L.NCR
    return out
