"""Building blocks shared by several networks and not provided by MONAI.

* :class:`DropBlock3D` - DropBlock (Ghiasi et al., NeurIPS 2018) for 3D feature maps.
* :func:`kaiming_init` - Kaiming (He et al., ICCV 2015) initialisation of convolutions.
* :class:`CBAM` - convolutional block attention (Woo et al., ECCV 2018), 2D or 3D.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DropBlock3D(nn.Module):
    """Zero contiguous ``block_size``^3 cubes of a (B, C, X, Y, Z) feature map while training.

    Block centres are drawn per sample and channel with rate

        gamma = drop_prob / block_size^3 * prod_i size_i / (size_i - block_size + 1),

    so that about ``drop_prob`` of the features are dropped; kept features are rescaled
    by (number of features / number kept), as in dropout. Identity in eval mode. The
    block is clamped to the smallest spatial size of the input.
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 5):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob, self.block_size = float(drop_prob), int(block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        size = x.shape[2:]
        bs = min(self.block_size, *size)
        valid = 1.0
        for s in size:
            valid *= s / (s - bs + 1)
        gamma = self.drop_prob / bs ** len(size) * valid
        centres = (torch.rand(x.shape, device=x.device) < gamma).to(x.dtype)
        dropped = F.max_pool3d(centres, kernel_size=bs, stride=1, padding=bs // 2)
        if bs % 2 == 0:  # even blocks pad one voxel too many on the far side
            dropped = dropped[..., : size[0], : size[1], : size[2]]
        keep = 1.0 - dropped
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))


def kaiming_init(module: nn.Module, negative_slope: float = 0.01) -> nn.Module:
    """Kaiming-normal weights (for leaky ReLU with ``negative_slope``) and zero biases in
    every (transposed) convolution of ``module``; returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=negative_slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class CBAM(nn.Module):
    """Convolutional block attention module (Woo et al., ECCV 2018): channel attention
    (a shared MLP on the average- and max-pooled features, sigmoid of their sum), then
    spatial attention (a ``kernel``-wide conv over the channel-wise mean and max, sigmoid),
    each multiplied into the features. Works on 2D or 3D maps; shapes are kept."""

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 7, spatial_dims: int = 3):
        super().__init__()
        Conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(Conv(channels, hidden, 1), nn.ReLU(inplace=True), Conv(hidden, channels, 1))
        self.spatial = Conv(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.ndim))
        x = x * torch.sigmoid(self.mlp(x.mean(dims, keepdim=True)) + self.mlp(x.amax(dims, keepdim=True)))
        return x * torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
