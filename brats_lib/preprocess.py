"""Preprocessing shared by the papers: brain mask, crop to the brain (and back),
intensity normalisation, the optional one-hot foreground channel.

All functions take channel-first arrays (C, H, W, D) as loaded by
:func:`brats_lib.data.load_case`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Voxels where any modality is non-zero.

    Real BraTS scans are skull-stripped but hold small negative values from
    interpolation, and the non-zero masks of the four modalities differ by a few
    voxels; the union over modalities of ``!= 0`` copes with both.
    """
    return np.any(image != 0, axis=0)


@dataclass(frozen=True)
class BBox:
    """A crop box: ``slices`` into a volume of ``full_shape`` (spatial)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    full_shape: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))


def bounding_box(mask: np.ndarray, margin: int = 0) -> BBox:
    """Smallest box holding ``mask`` grown by ``margin`` voxels (clipped to the volume).
    An empty mask gives the whole volume."""
    shape = mask.shape
    if not mask.any():
        return BBox((0, 0, 0), tuple(shape), tuple(shape))
    start, stop = [], []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        nz = np.flatnonzero(mask.any(axis=other))
        start.append(max(int(nz[0]) - margin, 0))
        stop.append(min(int(nz[-1]) + 1 + margin, shape[ax]))
    return BBox(tuple(start), tuple(stop), tuple(shape))


def centre_box(shape: Sequence[int], size: Sequence[int]) -> BBox:
    """A box of ``size`` (clipped to ``shape``) at the centre of a volume of ``shape``."""
    if len(size) != len(shape):
        raise ValueError(f"centre crop {list(size)} must have one size per axis of {list(shape)}")
    start = [max((n - min(s, n)) // 2, 0) for n, s in zip(shape, size)]
    stop = [a + min(s, n) for a, s, n in zip(start, size, shape)]
    return BBox(tuple(start), tuple(stop), tuple(int(n) for n in shape))


def crop_to_brain(image: np.ndarray, label: np.ndarray | None = None, margin: int = 0):
    """Crop (C, H, W, D) image and optional (H, W, D) label to the brain's box.
    Returns ``(image, label, bbox)``; :func:`uncrop` puts results back."""
    box = bounding_box(brain_mask(image), margin)
    img = image[(slice(None),) + box.slices]
    lab = label[box.slices] if label is not None else None
    return img, lab, box


def uncrop(array: np.ndarray, box: BBox, fill: float = 0.0) -> np.ndarray:
    """Place a cropped array (..., h, w, d) back into its full volume, ``fill`` outside.

    For probabilities, fill with the probability of background (0 for region
    sigmoids), never with logits: a logit of 0 is a probability of 0.5.
    """
    lead = array.shape[:-3]
    out = np.full(lead + tuple(box.full_shape), fill, dtype=array.dtype)
    out[(Ellipsis,) + box.slices] = array
    return out


def zscore(image: np.ndarray, mask: np.ndarray | None = None, clip_percentiles: tuple[float, float] | None = None,
           per_channel: bool = False) -> np.ndarray:
    """Per-modality z-score inside ``mask`` (default: the brain); 0 outside.

    ``per_channel``: each modality over its own non-zero voxels, 0 where it is zero (the
    Optimized U-Net, Futrega et al. 2021, Section 2.1), instead of one brain mask shared
    by all modalities. ``clip_percentiles`` = (lo, hi), e.g. (0.5, 99.5) as HNF-Net,
    first clips each modality to that percentile window of its brain voxels.
    """
    shared = brain_mask(image) if mask is None else mask
    out = np.zeros_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        x = image[c].astype(np.float32)
        mask = (image[c] != 0) if per_channel else shared
        v = x[mask]
        if v.size == 0:
            continue
        if clip_percentiles is not None:
            lo, hi = np.percentile(v, clip_percentiles)
            x = np.clip(x, lo, hi)
            v = x[mask]
        std = float(v.std())
        out[c] = np.where(mask, (x - float(v.mean())) / (std if std > 0 else 1.0), 0.0)
    return out


def minmax(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-modality min-max scaling to [0, 1] over ``mask`` (default: the brain); 0 outside."""
    mask = brain_mask(image) if mask is None else mask
    out = np.zeros_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        v = image[c][mask]
        if v.size == 0:
            continue
        lo, hi = float(v.min()), float(v.max())
        out[c] = np.where(mask, (image[c] - lo) / (hi - lo if hi > lo else 1.0), 0.0)
    return out


def foreground_channel(image: np.ndarray, mode: str = "brain") -> np.ndarray:
    """The extra input channel of NVIDIA's optimized U-Net, shape (1, H, W, D).

    ``mode="brain"``: 1 inside the brain (the paper's "foreground");
    ``mode="all_positive"``: 1 where every (z-scored) channel is > 0, as NVIDIA's code does.
    """
    if mode == "brain":
        m = brain_mask(image)
    elif mode == "all_positive":
        m = np.all(image > 0, axis=0)
    else:
        raise ValueError(f"unknown foreground mode {mode!r}; expected 'brain' or 'all_positive'")
    return m[None].astype(np.float32)


def normalise(image: np.ndarray, method: str = "zscore", **kwargs) -> np.ndarray:
    """Dispatch by name: ``"zscore"`` (one brain mask), ``"zscore_channel"`` (each
    modality over its own non-zero voxels) or ``"minmax"``."""
    if method == "zscore":
        return zscore(image, **kwargs)
    if method == "zscore_channel":
        return zscore(image, per_channel=True, **kwargs)
    if method == "minmax":
        return minmax(image, **kwargs)
    raise ValueError(f"unknown normalisation {method!r}; expected 'zscore', 'zscore_channel' or 'minmax'")
