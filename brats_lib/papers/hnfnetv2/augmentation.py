"""The online augmentation of HNF-Netv2 (Jia et al. 2021, Section 4.1)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class HNFNetAugmentation:
    """Callable ``(image (C, X, Y, Z), label (X, Y, Z), rng) -> (image, label)``: the online
    augmentation of HNF-Netv2 (Jia et al. 2021, Section 4.1).

    ==================  ======  =====================================================
    step                p       what
    ==================  ======  =====================================================
    flips               0.5     per axis, independently
    rotation            ``rotate_p``  one angle ~ U(-10, 10) degrees per plane, independently
                                (MONAI ``Rotate``: trilinear image, nearest label, zero fill)
    intensity shift     1       per channel, + U(-0.1, 0.1) (z-score units)
    intensity scale     1       per channel, x U(0.9, 1.1)
    ==================  ======  =====================================================

    The text gives the ranges, not the probabilities; these are our choice.
    """

    flip_p: float = 0.5
    rotate_p: float = 1.0
    max_degrees: float = 10.0
    shift: float = 0.1
    scale: float = 0.1

    def rotate(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        from monai.data import get_track_meta, set_track_meta
        from monai.transforms import Rotate

        angles = tuple(np.deg2rad(rng.uniform(-self.max_degrees, self.max_degrees, size=3)))
        # plain tensors, not MetaTensors: the same values, a third less time per patch (nothing
        # here reads the affine MONAI would track)
        track = get_track_meta()
        set_track_meta(False)
        try:
            img = Rotate(angles, keep_size=True, mode="bilinear", padding_mode="zeros")(image)
            lab = Rotate(angles, keep_size=True, mode="nearest", padding_mode="zeros")(label[None])[0]
        finally:
            set_track_meta(track)
        return np.asarray(img, np.float32), np.asarray(lab).astype(label.dtype)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        image, label = np.asarray(image, np.float32), np.asarray(label)
        for axis in range(3):
            if rng.random() < self.flip_p:
                image, label = np.flip(image, axis + 1), np.flip(label, axis)
        if rng.random() < self.rotate_p:
            image, label = self.rotate(np.ascontiguousarray(image), np.ascontiguousarray(label), rng)
        c = image.shape[0]
        shift = rng.uniform(-self.shift, self.shift, size=c).astype(np.float32)
        factor = rng.uniform(1 - self.scale, 1 + self.scale, size=c).astype(np.float32)
        image = (image + shift[:, None, None, None]) * factor[:, None, None, None]
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label)
