"""Losses shared by the papers (MONAI implementations) and deep-supervision weighting.

* Region-based (three sigmoid channels WT, TC, ET): Dice + BCE, per region, summed.
* Label-based (softmax over classes): Dice + cross-entropy, or Dice alone.
* Deep supervision: a list of outputs (main first) weighted and summed.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss, GeneralizedDiceLoss


class GeneralizedDiceBCE(nn.Module):
    """Generalized Dice loss (Sudre et al. 2017: class weights 1 / (sum of reference)^2) plus
    binary cross-entropy, on sigmoid region logits (B, C, ...) and 0/1 targets of the same shape."""

    def __init__(self, batch_dice: bool = True):
        super().__init__()
        self.gdl = GeneralizedDiceLoss(sigmoid=True, batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.gdl(logits, target) + F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


class RegionDicePlus(nn.Module):
    """Each sigmoid region optimised separately, the losses summed over regions
    (Futrega et al. 2021, Section 2.4; NVIDIA's code)::

        L = sum over regions r of [ Dice_r(sigmoid(logits_r), y_r) + pointwise_r(logits_r, y_r) ]

    Dice_r is MONAI's sigmoid Dice loss of channel r, batched (one Dice over all samples of
    the batch) when ``batch_dice``; pointwise_r is the mean over the batch and voxels of
    binary cross-entropy with logits (``"bce"``) or the sigmoid focal loss, gamma 2
    (``"focal"``), of channel r. Every voxel, background included, gets a gradient from
    the pointwise term. MONAI's ``DiceCELoss(sigmoid=True)`` differs on three channels: it
    applies softmax cross-entropy across the channels and averages over the regions.
    """

    def __init__(self, pointwise: str = "bce", batch_dice: bool = True):
        super().__init__()
        if pointwise not in ("bce", "focal"):
            raise ValueError(f"pointwise loss must be 'bce' or 'focal', got {pointwise!r}")
        self.dice = DiceLoss(sigmoid=True, batch=batch_dice, reduction="none", smooth_nr=1e-5, smooth_dr=1e-5)
        self.focal = FocalLoss(gamma=2.0, use_softmax=False, reduction="none") if pointwise == "focal" else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        per_region_dice = self.dice(logits, target).reshape(-1, logits.shape[1]).mean(0)  # (C,)
        if self.focal is None:
            point = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            point = self.focal(logits, target)
        per_region_point = point.transpose(0, 1).reshape(logits.shape[1], -1).mean(1)  # (C,)
        return (per_region_dice + per_region_point).sum()


def region_loss(kind: str = "dice_bce", batch_dice: bool = True) -> nn.Module:
    """On sigmoid regions: Dice + BCE (``"dice_bce"``) or Dice + Focal, gamma 2
    (``"dice_focal"``), each per region and summed (:class:`RegionDicePlus`), or
    generalized Dice + BCE (``"gdl_bce"``)."""
    if kind == "gdl_bce":
        return GeneralizedDiceBCE(batch_dice)
    if kind == "dice_bce":
        return RegionDicePlus("bce", batch_dice)
    if kind == "dice_focal":
        return RegionDicePlus("focal", batch_dice)
    raise ValueError(f"unknown region loss {kind!r}; expected 'dice_bce', 'dice_focal' or 'gdl_bce'")


class ClassIndexTarget(nn.Module):
    """Lets a MONAI one-hot loss take class-index targets (B, ...) as well as (B, 1, ...)."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits, target):
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        return self.loss(logits, target)


def label_loss(batch_dice: bool = False) -> nn.Module:
    """Softmax Dice + cross-entropy; targets are class indices (B, ...) or (B, 1, ...)."""
    return ClassIndexTarget(DiceCELoss(softmax=True, to_onehot_y=True, batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5))


def label_dice_loss(include_background: bool = False, batch_dice: bool = False) -> nn.Module:
    """Softmax Dice alone (V-Net's DSC loss, mean over classes), class-index targets."""
    return ClassIndexTarget(DiceLoss(softmax=True, to_onehot_y=True, include_background=include_background,
                                     batch=batch_dice, smooth_nr=1e-5, smooth_dr=1e-5))


class DeepSupervision(nn.Module):
    """Weighted sum of ``loss`` over a list of outputs (main first); a plain tensor is
    passed through. Outputs smaller than the target get the target down-sampled
    (nearest), as in the paper of NVIDIA's U-Net; ``normalise`` divides by the sum of
    weights, as NVIDIA's public code does."""

    def __init__(self, loss: nn.Module, weights: Sequence[float] = (1.0, 0.5, 0.25), normalise: bool = False):
        super().__init__()
        self.loss, self.weights, self.normalise = loss, list(weights), normalise

    def forward(self, outputs, target):
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        if len(outputs) > len(self.weights):
            raise ValueError(f"{len(outputs)} outputs but only {len(self.weights)} deep-supervision weights")
        total = 0.0
        for w, out in zip(self.weights, outputs):
            t = target
            if out.shape[2:] != target.shape[-out.ndim + 2:]:
                t = target if target.ndim == out.ndim else target.unsqueeze(1)
                t = F.interpolate(t.float(), size=out.shape[2:], mode="nearest").to(target.dtype)
                if target.ndim != out.ndim:
                    t = t.squeeze(1)
            total = total + w * self.loss(out, t)
        return total / sum(self.weights[: len(outputs)]) if self.normalise else total


class WithAuxiliaryLoss(nn.Module):
    """``loss(outputs, target) + weight * aux`` for networks that return ``(outputs, aux)``
    while training (SegResNetVAE's VAE loss, weight 0.1 as Myronenko); plain outputs
    pass through to ``loss``."""

    def __init__(self, loss: nn.Module, weight: float = 0.1):
        super().__init__()
        self.loss, self.weight = loss, float(weight)

    def forward(self, outputs, target):
        if isinstance(outputs, tuple) and len(outputs) == 2 and torch.is_tensor(outputs[1]) and outputs[1].ndim == 0:
            return self.loss(outputs[0], target) + self.weight * outputs[1]
        return self.loss(outputs, target)
