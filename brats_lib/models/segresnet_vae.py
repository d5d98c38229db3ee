"""SegResNetVAE (Myronenko, BraTS 2018 winner): a residual encoder-decoder with a
variational auto-encoder branch that reconstructs the input from the bottleneck,
regularising the shared encoder. MONAI's :class:`~monai.networks.nets.SegResNetVAE`.

Shapes: input (B, in_channels, X, Y, Z) with X, Y, Z equal to ``input_image_size``
(the training patch), each divisible by 8; output in eval mode (B, out_channels, X, Y,
Z) logits; in training mode a tuple ``(logits, vae_loss)`` where ``vae_loss`` = KL
term + mean squared reconstruction error (add it to the segmentation loss with
weight 0.1, as Myronenko: see :class:`brats_lib.losses.WithAuxiliaryLoss`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import SegResNetVAE as _MonaiSegResNetVAE

from . import register


@register("segresnet_vae", "SegResNetVAE: residual U-Net with a VAE regularisation branch (MONAI)")
class SegResNetVAE(nn.Module):
    """Myronenko's network: init filters 32, encoder blocks (1, 2, 2, 4), decoder (1, 1, 1),
    group norm (8 groups), ReLU, a 256-d latent (128 means, 128 standard deviations).

    Args:
        in_channels, out_channels: input modalities and output channels.
        input_image_size: the training patch (the VAE's dense layers depend on it).
        init_filters: channels of the first level (doubled per level).
        vae_nz: latent size (means; as many standard deviations are estimated).
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 3,
                 input_image_size: Sequence[int] = (128, 128, 128), init_filters: int = 32, vae_nz: int = 128):
        super().__init__()
        self.net = _MonaiSegResNetVAE(input_image_size=list(input_image_size), vae_estimate_std=True, vae_nz=vae_nz,
                                      spatial_dims=3, init_filters=init_filters, in_channels=in_channels,
                                      out_channels=out_channels, norm=("GROUP", {"num_groups": min(8, init_filters)}))
        self.divisor = 8

    def forward(self, x: torch.Tensor):
        logits, vae_loss = self.net(x)
        return (logits, vae_loss) if self.training else logits
