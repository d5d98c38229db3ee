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

:class:`DeviceNnUNetAugmentation` is the same list as batched tensor operations on the
training device (NVIDIA augment on the GPU with DALI): the loader then only crops, and
the GPU never waits for CPU workers. Its zoom is trilinear where the CPU version is
cubic (``grid_sample`` has no cubic mode in 3D); every random draw stays on the device,
so it adds no host synchronisation to a step.
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, RandGaussianNoised, RandGaussianSmoothd, RandScaleIntensityd
from scipy import ndimage

from .sampling import regions_on_device


@dataclass
class NnUNetSteps:
    """The paper's augmentation list (the table above): each step's probability and range;
    ``mri_channels`` leading channels are MRI, the rest get the spatial steps only."""

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


@dataclass
class NnUNetAugmentation(NnUNetSteps):
    """Callable ``(image (C, X, Y, Z), label (X, Y, Z), rng) -> (image, label)``.

    ``mri_channels``: how many leading channels are MRI (the rest, e.g. a one-hot
    foreground channel, get spatial steps only). Probabilities and ranges default to
    the paper's; ``scale=0`` disables every step (for ablations and tests).
    """

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
class FlipAugmentation:
    """Callable ``(image (C, *S), label (*S), rng) -> (image, label)``: each spatial axis
    flipped with probability ``p``, independently (Ma et al. 2021, Section 3.1.3, on 2D slices)."""

    p: float = 0.5

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        for axis in range(label.ndim):
            if rng.random() < self.p:
                image, label = np.flip(image, axis + 1), np.flip(label, axis)
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label)


@dataclass
class DeviceNnUNetAugmentation(NnUNetSteps):
    """The steps of :class:`NnUNetAugmentation` on a batch, on whatever device it lives:
    ``(image (B, C, X, Y, Z), target (B, K, X, Y, Z) float regions, step) -> (image, target)``.

    Each sample draws its own decisions and values from a generator seeded by
    ``(seed, step)``, so a resumed run repeats them. Steps apply to all samples with
    ``torch.where`` masks instead of Python branches, which keeps every random number on
    the device. Targets follow the spatial steps (nearest neighbour); the channels after
    ``mri_channels`` (a one-hot foreground channel) get the spatial steps only.
    """

    seed: int = 0

    def _generator(self, device: torch.device, step: int) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(int(self.seed) * 1_000_003 + int(step))
        return g

    @staticmethod
    def _uniform(g, n: int, lo: float, hi: float, device) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=g, device=device)

    @staticmethod
    def _per_sample(v: torch.Tensor, ndim: int) -> torch.Tensor:
        return v.view(-1, *([1] * (ndim - 1)))

    def zoom(self, image: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, chosen: torch.Tensor):
        """Zoom in by ``scale`` about the patch centre where ``chosen``: the central
        (size / scale) block resampled to the patch (trilinear MRI, nearest elsewhere)."""
        b = image.shape[0]
        theta = torch.zeros(b, 3, 4, device=image.device, dtype=torch.float32)
        theta[:, 0, 0] = theta[:, 1, 1] = theta[:, 2, 2] = 1.0 / scale
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        # grid_sample's (x, y, z) index (W, H, D) = our last, middle, first spatial axes: the
        # scale is the same on every axis, so the grid needs no reordering
        mri = F.grid_sample(image[:, : self.mri_channels].float(), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        rest = F.grid_sample(torch.cat([image[:, self.mri_channels:].float(), target.float()], 1), grid,
                             mode="nearest", padding_mode="border", align_corners=False)
        zoomed = torch.cat([mri, rest[:, : image.shape[1] - self.mri_channels]], 1).to(image.dtype)
        sel = self._per_sample(chosen, image.ndim)
        return torch.where(sel, zoomed, image), torch.where(sel, rest[:, image.shape[1] - self.mri_channels:].to(target.dtype), target)

    def blur(self, mri: torch.Tensor, sigma: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur with each sample's own sigma (a delta kernel where not chosen)."""
        b, c = mri.shape[:2]
        radius = int(math.ceil(3 * self.blur_sigma[1]))
        x = torch.arange(-radius, radius + 1, device=mri.device, dtype=torch.float32)
        k = torch.exp(-0.5 * (x[None] / sigma[:, None]) ** 2)
        k = k / k.sum(1, keepdim=True)
        delta = (x == 0).float()[None].expand_as(k)
        k = torch.where(chosen[:, None], k, delta).repeat_interleave(c, 0)  # (B * C, 2r + 1)
        out = mri.reshape(1, b * c, *mri.shape[2:]).float()
        for axis in range(3):
            shape = [b * c, 1, 1, 1, 1]
            shape[2 + axis] = 2 * radius + 1
            pad = [0] * 6
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
            out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape), groups=b * c)
        return out.view_as(mri).to(mri.dtype)

    def __call__(self, image: torch.Tensor, target: torch.Tensor, step: int):
        dev, b, nd = image.device, image.shape[0], image.ndim
        g = self._generator(dev, step)
        u = lambda: torch.rand(b, generator=g, device=dev)  # noqa: E731
        chosen, scale = u() < self.zoom_p, self._uniform(g, b, *self.zoom_range, dev)
        image, target = self.zoom(image, target, scale, chosen)
        for axis in range(3):
            flip = self._per_sample(u() < self.flip_p, nd)
            image = torch.where(flip, image.flip(axis + 2), image)
            target = torch.where(flip, target.flip(axis + 2), target)
        mri, extra = image[:, : self.mri_channels], image[:, self.mri_channels:]
        noisy, sd = u() < self.noise_p, self._uniform(g, b, 0.0, self.noise_sd, dev)
        noise = torch.randn(mri.shape, generator=g, device=dev, dtype=mri.dtype)
        mri = mri + self._per_sample(noisy * sd, nd).to(mri.dtype) * noise
        blurred, sigma = u() < self.blur_p, self._uniform(g, b, *self.blur_sigma, dev)
        mri = self.blur(mri, sigma, blurred)
        bright, factor = u() < self.brightness_p, self._uniform(g, b, *self.brightness_range, dev)
        mri = mri * self._per_sample(torch.where(bright, factor, torch.ones_like(factor)), nd).to(mri.dtype)
        con, cf = u() < self.contrast_p, self._uniform(g, b, *self.contrast_range, dev)
        lo = mri.amin(dim=tuple(range(1, nd)), keepdim=True)
        hi = mri.amax(dim=tuple(range(1, nd)), keepdim=True)
        contrasted = torch.minimum(torch.maximum(mri * self._per_sample(cf, nd).to(mri.dtype), lo), hi)
        mri = torch.where(self._per_sample(con, nd), contrasted, mri)
        return torch.cat([mri, extra], 1), target


class DeviceBatch:
    """A ``batch_transform`` for :func:`~brats_lib.training.fit`: the loader sends uint8
    label maps (``PatchDataset(target="label_map")``, a twelfth of the bytes of float
    regions), encoded to WT/TC/ET regions on the device, then augmented there when
    ``augment`` is given."""

    def __init__(self, augment: DeviceNnUNetAugmentation | None = None):
        self.augment = augment

    def __call__(self, image: torch.Tensor, label_map: torch.Tensor, step: int):
        target = regions_on_device(label_map)
        return (image, target) if self.augment is None else self.augment(image, target, step)
