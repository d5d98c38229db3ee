"""Post-processing rules of the papers, each named after its paper.

All functions take canonical label maps (0 background, 1 NCR, 2 ED, 3 ET; see
:mod:`brats_lib.labels`) and, where the rule needs them, the probability maps of the
network (channels WT, TC, ET for region-based models), and return a new label map.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import labels as L

#: channel of the ET probability in region-based outputs (WT, TC, ET)
ET_CHANNEL = L.REGION_CHANNELS.index("ET")


def optimized_unet(labels: np.ndarray, probs: np.ndarray, min_component: int = 16, min_total: int = 73,
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
    :func:`optimized_unet` looks at; (0, 0.0) without ET."""
    et = labels == L.ET
    n = int(et.sum())
    return n, float(probs[ET_CHANNEL][et].mean()) if n else 0.0


def hnfnetv2(labels: np.ndarray, probs: np.ndarray | None = None, min_et: int = 200) -> np.ndarray:
    """The rule of Jia et al. (HNF-Netv2, BraTS 2021), Section 4.1, after Isensee et al.:
    when fewer than ``min_et`` voxels are predicted ET, all of them become NCR/NET (they
    stay in the tumour core). ``probs`` is accepted for a uniform signature and unused."""
    out = labels.copy()
    et = out == L.ET
    if 0 < int(et.sum()) < min_et:
        out[et] = L.NCR
    return out


def omnet_threshold(volumes: np.ndarray, tau_max: float = 2000, tau_fraction: float = 0.1) -> float:
    """tau_VOL of Zhou et al. (OM-Net), Section III-D: min(tau_max, tau_fraction * V_max),
    V_max the largest connected tumour volume (voxels). The text lost the formula's
    numbers; ``notebooks/papers.md`` gives min(2000, 0.1 V_max) as the best guess."""
    return float(min(tau_max, tau_fraction * volumes.max())) if volumes.size else 0.0


def omnet(labels: np.ndarray, image: np.ndarray, tau_max: float = 2000, tau_fraction: float = 0.1,
          et_max_component: int = 1000, et_ratio: float = 0.1, et_ratio_component: float = 0.05,
          t1ce_channel: int = 1, seed: int = 0) -> np.ndarray:
    """The two-step post-processing of Zhou et al. (OM-Net + CGA, IEEE TIP 2020), Section III-D.

    1. Connected tumour components (26-connectivity) smaller than
       :func:`omnet_threshold` are removed.
    2. If vol_e / vol_t < ``et_ratio`` over the case, then in each component n with
       vol_e(n) / vol_t(n) < ``et_ratio_component`` and vol_e(n) < ``et_max_component``,
       its ED voxels are split in two by K-means on their intensities (the four
       sequences, z-scored inside the brain); the group with the lower mean T1c becomes
       NCR/NET. ET and the whole tumour are unchanged by this step.

    ``image``: the raw (4, H, W, D) case (T1c at ``t1ce_channel``).
    """
    from scipy.cluster.vq import kmeans2

    from .preprocess import zscore

    out = labels.copy()
    comp, n = ndimage.label(out > 0, structure=np.ones((3,) * out.ndim, bool))
    if n == 0:
        return out
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    tau = omnet_threshold(sizes[1:], tau_max, tau_fraction)
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
