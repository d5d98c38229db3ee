"""Plain 3D U-Net with nnU-Net blocks (Isensee et al., Nature Methods 2021).

Each level: two (conv 3x3x3 - InstanceNorm (affine) - LeakyReLU 0.01) blocks, the
first conv of a level carrying stride 2 for down-sampling; the decoder up-samples by
a transposed conv (kernel = stride = 2), concatenates the skip and applies one
block. Built on MONAI's :class:`~monai.networks.nets.DynUNet`, which implements
exactly this design.

Shapes: input (B, in_channels, X, Y, Z), every spatial size divisible by
2 ** (depth - 1); output (B, out_channels, X, Y, Z) logits. With
``deep_supervision`` and in training mode, the output is a list: the main logits
followed by ``deep_supervision_heads`` lower-resolution decoder heads, each
up-sampled to the input size (as NVIDIA's public code; losses weight them).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import DynUNet

from . import register


@register("unet3d", "plain 3D U-Net, nnU-Net blocks (conv-IN-LeakyReLU), configurable depth/filters")
class UNet3D(nn.Module):
    """Plain 3D U-Net (nnU-Net style) with optional deep supervision.

    Args:
        in_channels: input modalities (4, or 5 with a foreground channel).
        out_channels: 3 region logits (WT, TC, ET) or 4 class logits.
        depth: number of resolution levels (strides [1] + [2] * (depth - 1)).
        filters: channels per level (``len(filters) == depth``); default 32 doubling, capped at 320.
        deep_supervision: return extra decoder heads while training.
        deep_supervision_heads: how many extra heads.
        residual: residual blocks instead of plain conv blocks.
        dropout: dropout probability inside blocks.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 3, depth: int = 5,
                 filters: Sequence[int] | None = None, deep_supervision: bool = False,
                 deep_supervision_heads: int = 2, residual: bool = False, dropout: float = 0.0):
        super().__init__()
        filters = list(filters) if filters is not None else [min(32 * 2 ** i, 320) for i in range(depth)]
        if len(filters) != depth:
            raise ValueError(f"filters {filters} must have one entry per level (depth={depth})")
        strides = [[1, 1, 1]] + [[2, 2, 2]] * (depth - 1)
        self.deep_supervision = deep_supervision
        self.net = DynUNet(
            spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
            kernel_size=[[3, 3, 3]] * depth, strides=strides, upsample_kernel_size=strides[1:],
            filters=filters, dropout=dropout or None,
            norm_name=("INSTANCE", {"affine": True}), act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
            deep_supervision=deep_supervision, deep_supr_num=deep_supervision_heads, res_block=residual,
        )
        self.divisor = 2 ** (depth - 1)

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        if self.deep_supervision and self.training:
            return list(torch.unbind(out, dim=1))
        return out
