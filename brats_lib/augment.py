"""Training-patch augmentation: the nnU-Net-style list used by NVIDIA's Optimized U-Net
(Futrega et al. 2021, Section 2.2), each step with its probability and range.

================  ====  ========================================================
step              p     what
================  ====  ========================================================
zoom              0.15  scale s ~ U(1.0, 1.4): the central patch / s is resized back
                        to the patch, cubic for images, nearest for labels
flips             0.5   per axis, independently
Gaussian noise    0.15  sd ~ U(0, 0.33) (MONAI ``RandGaussianNoised``)
Gaussian blur     0.15  sigma ~ U(0.5, 1.5) (MONAI ``RandGaussianSmoothd``)
brightness        0.15  multiply by U(0.7, 1.3) (MONAI ``RandScaleIntensityd``)
contrast          0.15  multiply by U(0.65, 1.5), clip to the patch's original range
================  ====  ========================================================

The foreground-biased crop (p 0.4) happens before, in :mod:`brats_lib.sampling`.
Intensity steps touch only the MRI channels: an appended one-hot foreground
channel is moved by the spatial steps but keeps its 0/1 values.

Augmentation is deterministic given the generator a
:class:`~brats_lib.sampling.PatchDataset` passes per sample, so resumed runs and
any number of loader workers see the same patches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from monai.transforms import Compose, RandGaussianNoised, RandGaussianSmoothd, RandScaleIntensityd
from scipy import ndimage


@dataclass
class NnUNetAugmentation:
    """Callable ``(image (C, X, Y, Z), label (X, Y, Z), rng) -> (image, label)``.

    ``mri_channels``: how many leading channels are MRI (the rest, e.g. a one-hot
    foreground channel, get spatial steps only). Probabilities and ranges default to
    the paper's; ``scale=0`` disables every step (for ablations and tests).
    """

    mri_channels: int = 4
    zoom_p: float = 0.15
    zoom_range: tuple[float, float] = (1.0, 1.4)
    flip_p: float = 0.5
    noise_p: float = 0.15
    noise_sd: float = 0.33
    blur_p: float = 0.15
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    brightness_p: float = 0.15
    brightness_range: tuple[float, float] = (0.7, 1.3)
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.65, 1.5)

    def __post_init__(self):
        lo, hi = self.brightness_range
        if abs((lo + hi) / 2 - 1.0) > 1e-9:
            raise ValueError(f"brightness_range {self.brightness_range} must be symmetric around 1")
        self._monai = Compose([
            RandGaussianNoised("image", prob=self.noise_p, mean=0.0, std=self.noise_sd, sample_std=True),
            RandGaussianSmoothd("image", sigma_x=self.blur_sigma, sigma_y=self.blur_sigma, sigma_z=self.blur_sigma,
                                prob=self.blur_p),
            RandScaleIntensityd("image", factors=(hi - 1.0), prob=self.brightness_p),
        ])

    def zoom(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        """Zoom in by s ~ U(zoom_range): resize the central (size / s) block back to size."""
        s = rng.uniform(*self.zoom_range)
        size = np.array(label.shape)
        crop = np.maximum(np.round(size / s).astype(int), 1)
        lo = (size - crop) // 2
        sl = tuple(slice(a, a + c) for a, c in zip(lo, crop))
        factors = size / crop
        img = np.stack([ndimage.zoom(ch[sl], factors, order=3 if i < self.mri_channels else 0, mode="nearest",
                                     grid_mode=True) for i, ch in enumerate(image)])
        lab = ndimage.zoom(label[sl], factors, order=0, mode="nearest", grid_mode=True)
        return img[(slice(None),) + tuple(slice(0, n) for n in size)], lab[tuple(slice(0, n) for n in size)]

    def contrast(self, mri: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lo, hi = float(mri.min()), float(mri.max())
        return np.clip(mri * rng.uniform(*self.contrast_range), lo, hi)

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        image, label = np.asarray(image, np.float32), np.asarray(label)
        if rng.random() < self.zoom_p:
            image, label = self.zoom(image, label, rng)
        for axis in range(3):
            if rng.random() < self.flip_p:
                image, label = np.flip(image, axis + 1), np.flip(label, axis)
        mri, extra = image[: self.mri_channels], image[self.mri_channels:]
        self._monai.set_random_state(seed=int(rng.integers(2 ** 31)))
        mri = np.asarray(self._monai({"image": np.ascontiguousarray(mri)})["image"], np.float32)
        if rng.random() < self.contrast_p:
            mri = self.contrast(mri, rng)
        image = np.concatenate([mri, extra]) if extra.shape[0] else mri
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label)


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
        from monai.transforms import Rotate

        angles = tuple(np.deg2rad(rng.uniform(-self.max_degrees, self.max_degrees, size=3)))
        img = Rotate(angles, keep_size=True, mode="bilinear", padding_mode="zeros")(image)
        lab = Rotate(angles, keep_size=True, mode="nearest", padding_mode="zeros")(label[None])[0]
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


@dataclass
class FlipAugmentation:
    """Callable ``(image (C, *S), label (*S), rng) -> (image, label)``: each spatial axis
    flipped with probability ``p``, independently (Ma et al. 2021, Section 3.1.3, on 2D slices)."""

    p: float = 0.5

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        for axis in range(label.ndim):
            if rng.random() < self.p:
                image, label = np.flip(image, axis + 1), np.flip(label, axis)
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label)
