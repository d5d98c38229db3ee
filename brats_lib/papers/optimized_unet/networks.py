"""The U-Nets of Futrega et al., "Optimized U-Net for Brain Tumor Segmentation"
(BraTS 2021, NVIDIA), Sections 2.3 and 3.3: every architecture row of its ablation
tables, registered by name.

All are :class:`~brats_lib.models.unet3d.UNet3D` (nnU-Net blocks, Kaiming init):

===========================  =====================================================
name                         paper row
===========================  =====================================================
``optimized_unet_baseline``  nnU-Net default: depth 6, filters 32-64-128-256-320-320
``optimized_unet_attention`` baseline + attention gates in the decoder
``optimized_unet_residual``  baseline + residual blocks
``optimized_unet_dropblock`` baseline + DropBlock
``optimized_unet_ds``        baseline + deep supervision (two extra heads)
``optimized_unet_deeper``    DS + a 7th level (filters 32 ... 320, 320)
``optimized_unet_channels``  DS + filters 64-96-128-192-256-384 (depth 6)
``optimized_unet_onehot``    DS + a fifth input channel (one-hot foreground)
``optimized_unet``           the final model, D+C+O: depth 7, filters 64-96-128-192-256-384-512,
                             DS, 5 input channels (50.8M parameters)
===========================  =====================================================

``base_filters`` / ``wide_filters`` scale every variant together (the ``cpu`` profile
shrinks them): Deeper appends the last base width once more, Channels takes the
first ``len(base_filters)`` wide widths, the final model all of them.

Shapes: input (B, 4 or 5, X, Y, Z), each size divisible by 2 ** (depth - 1); output
(B, 3, X, Y, Z) logits for WT, TC, ET (a list with the deep-supervision heads while
training).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from brats_lib.models import register
from brats_lib.models.unet3d import UNet3D

#: nnU-Net's default filters for a 128^3 BraTS patch (depth 6)
PAPER_BASE_FILTERS = (32, 64, 128, 256, 320, 320)
#: the paper's widened filters (depth 7)
PAPER_WIDE_FILTERS = (64, 96, 128, 192, 256, 384, 512)

#: variant -> (deep supervision, deeper, wider channels, one-hot input, block options)
VARIANTS: dict[str, dict] = {
    "baseline": dict(),
    "attention": dict(attention=True),
    "residual": dict(residual=True),
    "dropblock": dict(drop_block=0.1),
    "ds": dict(deep_supervision=True),
    "deeper": dict(deep_supervision=True, deeper=True),
    "channels": dict(deep_supervision=True, wide=True),
    "onehot": dict(deep_supervision=True, onehot=True),
    "final": dict(deep_supervision=True, deeper=True, wide=True, onehot=True),
}


def variant_filters(variant: str, base_filters: Sequence[int] = PAPER_BASE_FILTERS,
                    wide_filters: Sequence[int] = PAPER_WIDE_FILTERS) -> list[int]:
    """Filters per level of ``variant`` (see the module docstring)."""
    v = VARIANTS[variant]
    base, wide = list(base_filters), list(wide_filters)
    if len(wide) != len(base) + 1:
        raise ValueError(f"wide_filters {wide} must have one level more than base_filters {base}")
    if v.get("wide"):
        return wide if v.get("deeper") else wide[: len(base)]
    return base + [base[-1]] if v.get("deeper") else base


def optimized_unet_variant(variant: str = "final", in_channels: int | None = None, out_channels: int = 3,
                           base_filters: Sequence[int] = PAPER_BASE_FILTERS,
                           wide_filters: Sequence[int] = PAPER_WIDE_FILTERS, ds_upsample: bool = False,
                           drop_block_size: int = 5) -> nn.Module:
    """Build one ablation variant. ``in_channels`` defaults to 5 for the one-hot variants, else 4."""
    if variant not in VARIANTS:
        raise KeyError(f"unknown Optimized U-Net variant {variant!r}; known: {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    filters = variant_filters(variant, base_filters, wide_filters)
    if in_channels is None:
        in_channels = 5 if v.get("onehot") else 4
    return UNet3D(in_channels=in_channels, out_channels=out_channels, depth=len(filters), filters=filters,
                  deep_supervision=bool(v.get("deep_supervision")), deep_supervision_heads=2,
                  ds_upsample=ds_upsample, residual=bool(v.get("residual")), attention=bool(v.get("attention")),
                  drop_block=float(v.get("drop_block", 0.0)), drop_block_size=drop_block_size)


def _registered(variant: str):
    def build(**kwargs) -> nn.Module:
        return optimized_unet_variant(variant, **kwargs)

    build.__doc__ = f"Optimized U-Net ablation variant {variant!r}."
    return build


for _v in VARIANTS:
    _name = "optimized_unet" if _v == "final" else f"optimized_unet_{_v}"
    _desc = ("Optimized U-Net final model (D+C+O): depth 7, 64-512 filters, deep supervision, 5 inputs"
             if _v == "final" else f"Optimized U-Net ablation: {_v}")
    register(_name, _desc)(_registered(_v))
