"""BraTS metrics per region: Dice, HD95, sensitivity, specificity, PPV.

Conventions (those of the official BraTS evaluation, panoptica, and of medpy):

* **HD95**: border voxels are ``mask XOR binary_erosion(mask)`` with connectivity 1
  (6-neighbourhood in 3D; voxels on the array edge count as border); for every border
  voxel of one mask the Euclidean distance (voxel spacing from the header) to the
  nearest border voxel of the other; the 95th percentile of the pooled distances of
  both directions. Equal to ``medpy.metric.binary.hd95`` to floating-point precision.
* **Empty regions**: reference and prediction both empty gives Dice 1, HD95 0,
  sensitivity 1, PPV 1; exactly one empty gives Dice 0 and HD95 = ``HD95_EMPTY``
  (373.13 mm, the diagonal of the 240 x 240 x 155 BraTS volume); sensitivity
  (undefined when the reference is empty) and PPV (undefined when the prediction is
  empty) are then 0.
* **Specificity** counts true negatives over the whole array given.

Speed: distance transforms run on the union bounding box of the two masks (plus a
one-voxel margin), which gives exactly the same distances as on the whole volume
and is what makes a 240 x 240 x 155 case cheap.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from . import labels as L

HD95_EMPTY = 373.13
METRICS = ("Dice", "HD95", "Sensitivity", "Specificity", "PPV")
SUMMARY_ROWS = ("Mean", "StdDev", "Median", "25quantile", "75quantile")


def nonzero_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels of ``mask`` (None when there are none)."""
    box = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        nz = np.flatnonzero(mask.any(axis=other))
        if nz.size == 0:
            return None
        box.append(slice(int(nz[0]), int(nz[-1]) + 1))
    return tuple(box)


def _union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``a | b`` (both non-empty together)."""
    return nonzero_box(a | b)


def _crop_pair(a: np.ndarray, b: np.ndarray):
    """Crop two masks to their union bounding box with a one-voxel zero margin."""
    box = _union_box(a, b)
    pad = [(1, 1)] * a.ndim
    return np.pad(a[box], pad), np.pad(b[box], pad)


def _border(mask: np.ndarray) -> np.ndarray:
    struct = ndi.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndi.binary_erosion(mask, structure=struct, iterations=1)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None):
    """Distances from pred's border voxels to ref's border, and the reverse (both non-empty)."""
    p, r = _crop_pair(np.asarray(pred, bool), np.asarray(ref, bool))
    # medpy erodes the uncropped arrays, where the array edge acts as background:
    # the zero margin added by _crop_pair reproduces that exactly
    bp, br = _border(p), _border(r)
    sampling = None if spacing is None else [float(s) for s in spacing]
    d_p = ndi.distance_transform_edt(~br, sampling=sampling)[bp]
    d_r = ndi.distance_transform_edt(~bp, sampling=sampling)[br]
    return d_p, d_r


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile Hausdorff distance with the BraTS empty-set rules."""
    pe, re_ = not np.any(pred), not np.any(ref)
    if pe and re_:
        return 0.0
    if pe or re_:
        return HD95_EMPTY
    d_p, d_r = surface_distances(pred, ref, spacing)
    return float(np.percentile(np.hstack((d_p, d_r)), 95))


def confusion(pred: np.ndarray, ref: np.ndarray, size: int | None = None) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) voxel counts; ``size`` = voxels of the whole volume when the
    masks are a crop of it (everything outside the crop is a true negative)."""
    pred, ref = np.asarray(pred, bool), np.asarray(ref, bool)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return tp, fp, fn, int(size if size is not None else pred.size) - tp - fp - fn


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return num / den


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None,
                   size: int | None = None) -> dict[str, float]:
    """All five metrics for one pair of binary masks (``size``: see :func:`confusion`)."""
    tp, fp, fn, tn = confusion(pred, ref, size)
    both_empty = tp + fp + fn == 0
    return {
        "Dice": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
        "HD95": hd95(pred, ref, spacing),
        "Sensitivity": _ratio(tp, tp + fn, both_empty),
        "Specificity": _ratio(tn, tn + fp, True),
        "PPV": _ratio(tp, tp + fp, both_empty),
    }


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    tp, fp, fn, _ = confusion(pred, ref)
    return _ratio(2 * tp, 2 * tp + fp + fn, tp + fp + fn == 0)


def evaluate_labels(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None,
                    regions: Iterable[str] = tuple(L.REGIONS), size: int | None = None) -> dict[str, dict[str, float]]:
    """Canonical label maps -> {region: {metric: value}} for ET, TC, WT. ``size``: voxels
    of the whole volume when the maps are a crop of it holding all tumour of both (for
    specificity; everything outside is a true negative)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    size = pred.size if size is None else int(size)
    # every region lies inside the joint tumour box: work on that crop only (label maps
    # are non-negative, so ``pred | ref`` is non-zero exactly where either has tumour)
    union = (pred | ref) if pred.dtype.kind in "ub" and ref.dtype.kind in "ub" else (pred > 0) | (ref > 0)
    box = nonzero_box(union)
    if box is not None:
        pred, ref = pred[box], ref[box]
    return {r: binary_metrics(L.region_mask(pred, r), L.region_mask(ref, r), spacing, size) for r in regions}


def case_scores(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> dict[str, float]:
    """One case's row of a per-case table: ``"{Metric} {Region}"`` for every metric and
    region (ET, TC, WT; :func:`evaluate_labels`), and the voxel counts ``"pred voxels {R}"``
    / ``"ref voxels {R}"`` of each region in the prediction and the reference. The counts
    show where a score comes from the empty-region rules (both empty: Dice 1, HD95 0),
    which :mod:`brats_lib.claims` flags."""
    res = evaluate_labels(pred, ref, spacing)
    row = {f"{m} {r}": res[r][m] for r in L.REGIONS for m in METRICS}
    for r in L.REGIONS:
        row[f"pred voxels {r}"] = int(np.count_nonzero(L.region_mask(pred, r)))
        row[f"ref voxels {r}"] = int(np.count_nonzero(L.region_mask(ref, r)))
    return row


def to_frame(per_case: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """{case: {region: {metric: v}}} -> wide table, one row per case, columns
    ``<Metric>_<Region>`` in the BraTS order (Dice_ET, Dice_TC, Dice_WT, HD95_ET, ...)."""
    rows = {}
    for cid, res in per_case.items():
        rows[cid] = {f"{m}_{r}": res[r][m] for m in METRICS for r in L.REGIONS if r in res}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "case"
    return df


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """The BraTS summary rows: Mean, StdDev, Median, 25quantile, 75quantile."""
    stats = pd.DataFrame({
        "Mean": df.mean(), "StdDev": df.std(ddof=0), "Median": df.median(),
        "25quantile": df.quantile(0.25), "75quantile": df.quantile(0.75),
    }).T
    stats.index.name = "case"
    return stats


def with_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per-case rows followed by the summary rows, as the BraTS evaluation prints them."""
    return pd.concat([df, summarise(df)])
