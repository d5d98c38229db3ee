"""UNETR (Hatamizadeh et al., WACV 2022): a ViT encoder on 16^3 patches with a
convolutional decoder. MONAI's :class:`~monai.networks.nets.UNETR`, registered by name.

Shapes: input (B, in_channels, X, Y, Z) with X, Y, Z equal to ``img_size`` (the
training patch; sliding-window inference keeps it), each divisible by 16; output
(B, out_channels, X, Y, Z) logits.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn
from monai.networks.nets import UNETR

from . import register


@register("unetr", "UNETR: ViT encoder (16^3 patches) + conv decoder (MONAI)")
def unetr(in_channels: int = 4, out_channels: int = 3, img_size: Sequence[int] | int = 128,
          feature_size: int = 16, hidden_size: int = 768, mlp_dim: int = 3072, num_heads: int = 12,
          dropout: float = 0.0) -> nn.Module:
    """The paper's settings by default: embedding 768, 12 heads, MLP 3072, 12 layers,
    decoder feature size 16, instance norm, residual conv blocks."""
    net = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=img_size, feature_size=feature_size,
                hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads, proj_type="conv",
                norm_name="instance", res_block=True, dropout_rate=dropout)
    net.divisor = 16
    return net
