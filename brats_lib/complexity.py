"""Parameter and multiply-accumulate counts, the convention of the papers' tables.

``macs`` = FLOPs / 2 as counted by :class:`torch.utils.flop_counter.FlopCounterMode`
for one forward pass (convolutions, matrix products, ...); ``conv_macs`` counts
convolutions (and transposed convolutions) only, which is what HNF-Net's "FLOPs"
column reports. The forward pass runs on the ``meta`` device, so a 128^3 count
needs neither time nor memory; models whose forward cannot run on ``meta`` fall
back to the CPU.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from . import models


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _count(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    counts = counter.get_flop_counts().get("Global", {})
    conv = sum(v for k, v in counts.items() if "convolution" in str(k))
    return counter.get_total_flops() // 2, conv // 2


def forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs (all operations) of one forward pass of ``model`` on ``x``."""
    return int(_count(model, x)[0])


def complexity(name: str, patch: Sequence[int] = (128, 128, 128), in_channels: int = 4,
               batch: int = 1, **kwargs) -> dict:
    """Build ``name`` from the registry and count parameters and MACs for one forward
    pass of a (batch, in_channels, *patch) input."""
    kwargs.setdefault("in_channels", in_channels)
    shape = (batch, in_channels, *patch)
    try:
        with torch.device("meta"):
            model = models.build(name, **kwargs)
            macs, conv_macs = _count(model, torch.empty(shape))
    except (NotImplementedError, RuntimeError):
        model = models.build(name, **kwargs)
        macs, conv_macs = _count(model, torch.zeros(shape))
    return {"model": name, "input": list(shape), "params": count_parameters(model),
            "macs": int(macs), "conv_macs": int(conv_macs)}
