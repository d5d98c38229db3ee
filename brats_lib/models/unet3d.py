"""3D U-Net with nnU-Net blocks (Isensee et al., Nature Methods 2021) and the common
extensions: residual blocks (He et al. 2016), attention gates on the skips (Oktay et
al. 2018), DropBlock (Ghiasi et al. 2018) and deep supervision (Zhu et al. 2017).

Encoder level ``i`` is one block of two (conv 3x3x3 - InstanceNorm (affine) - LeakyReLU
0.01), the first conv carrying stride 2 for ``i > 0``; the last level is the bottleneck.
Decoder level ``i``: transposed conv (kernel = stride = 2) from level ``i + 1``, an
optional attention gate on the skip (gated by the up-sampled features), concatenation,
one block. A 1x1x1 conv gives the logits. The blocks are MONAI's
(:class:`~monai.networks.blocks.UnetBasicBlock`, :class:`~monai.networks.blocks.UnetResBlock`,
:class:`~monai.networks.nets.attentionunet.AttentionBlock`), so with the defaults this is
exactly MONAI's ``DynUNet``.

Shapes: input (B, in_channels, X, Y, Z), each spatial size divisible by
2 ** (depth - 1); output (B, out_channels, X, Y, Z) logits. With ``deep_supervision``
and in training mode the output is a list: the main logits, then one head per
lower decoder level (levels 1, 2, ...) at that level's resolution (X / 2, X / 4, ...),
as in the Optimized U-Net paper (the loss down-samples the labels); with
``ds_upsample`` the heads are up-sampled to the input size instead, as NVIDIA's
public code does.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import UnetBasicBlock, UnetOutBlock, UnetResBlock
from monai.networks.nets.attentionunet import AttentionBlock

from . import register
from .blocks import DropBlock3D, kaiming_init

NORM = ("INSTANCE", {"affine": True})
ACT = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


@register("unet3d", "3D U-Net, nnU-Net blocks; options: residual, attention gates, DropBlock, deep supervision")
class UNet3D(nn.Module):
    """nnU-Net-style 3D U-Net.

    Args:
        in_channels: input modalities (4, or 5 with a foreground channel).
        out_channels: 3 region logits (WT, TC, ET) or 4 class logits.
        depth: resolution levels (strides [1] + [2] * (depth - 1)).
        filters: channels per level (``len(filters) == depth``); default 32 doubling, capped at 320.
        deep_supervision: return extra decoder heads while training.
        deep_supervision_heads: how many extra heads (decoder levels 1 .. heads).
        ds_upsample: up-sample the extra heads to the input size (NVIDIA's code) instead of
            leaving them at their level's resolution (the paper).
        residual: residual blocks (conv-IN-LReLU-conv-IN + shortcut, then LReLU).
        attention: attention gates on the skip connections.
        drop_block: DropBlock probability after every block of the lowest
            ``drop_block_levels`` encoder levels (0 = off).
        drop_block_size: DropBlock cube edge.
        drop_block_levels: how many of the lowest encoder levels (bottleneck included) get DropBlock.
        dropout: dropout probability inside blocks.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 3, depth: int = 5,
                 filters: Sequence[int] | None = None, deep_supervision: bool = False,
                 deep_supervision_heads: int = 2, ds_upsample: bool = False, residual: bool = False,
                 attention: bool = False, drop_block: float = 0.0, drop_block_size: int = 5,
                 drop_block_levels: int = 3, dropout: float = 0.0):
        super().__init__()
        filters = list(filters) if filters is not None else [min(32 * 2 ** i, 320) for i in range(depth)]
        if len(filters) != depth:
            raise ValueError(f"filters {filters} must have one entry per level (depth={depth})")
        if deep_supervision and not 0 < deep_supervision_heads < depth - 1:
            raise ValueError(f"deep_supervision_heads must be in 1..{depth - 2} for depth {depth}")
        Block = UnetResBlock if residual else UnetBasicBlock
        drop = dropout or None
        self.depth, self.divisor = depth, 2 ** (depth - 1)
        self.deep_supervision, self.ds_upsample = deep_supervision, ds_upsample
        self.encoder = nn.ModuleList(
            Block(3, in_channels if i == 0 else filters[i - 1], filters[i], 3, 1 if i == 0 else 2, NORM, ACT, drop)
            for i in range(depth))
        self.drop_blocks = nn.ModuleList(
            DropBlock3D(drop_block, drop_block_size) if drop_block > 0 and i >= depth - drop_block_levels
            else nn.Identity() for i in range(depth))
        levels = range(depth - 1)  # decoder level i receives level i + 1
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(filters[i + 1], filters[i], kernel_size=2, stride=2, bias=False) for i in levels)
        self.gates = nn.ModuleList(
            AttentionBlock(3, f_int=max(filters[i] // 2, 1), f_g=filters[i], f_l=filters[i]) if attention
            else nn.Identity() for i in levels)
        self.decoder = nn.ModuleList(Block(3, 2 * filters[i], filters[i], 3, 1, NORM, ACT, drop) for i in levels)
        self.head = UnetOutBlock(3, filters[0], out_channels)
        self.ds_heads = nn.ModuleList(
            UnetOutBlock(3, filters[i], out_channels) for i in range(1, deep_supervision_heads + 1)
        ) if deep_supervision else nn.ModuleList()
        self.attention = attention
        kaiming_init(self)

    def forward(self, x: torch.Tensor):
        skips = []
        for block, drop in zip(self.encoder, self.drop_blocks):
            x = drop(block(x))
            skips.append(x)
        x = skips.pop()  # the bottleneck
        decoded: dict[int, torch.Tensor] = {}
        for i in reversed(range(self.depth - 1)):
            up = self.up[i](x)
            skip = self.gates[i](g=up, x=skips[i]) if self.attention else skips[i]
            x = self.decoder[i](torch.cat([up, skip], dim=1))
            decoded[i] = x
        out = self.head(x)
        if not (self.deep_supervision and self.training):
            return out
        heads = [head(decoded[i + 1]) for i, head in enumerate(self.ds_heads)]
        if self.ds_upsample:
            heads = [F.interpolate(h, size=out.shape[2:], mode="trilinear", align_corners=False) for h in heads]
        return [out] + heads
