"""Which floating-point precision training and inference run in.

``amp`` (every notebook's parameter of that name) turns on mixed precision where the
hardware has it:

* CUDA: ``torch.autocast`` to float16, with a gradient scaler in training;
* CPUs with bfloat16 instructions (AVX512-BF16 or AMX, as oneDNN reports them):
  ``torch.autocast("cpu")`` to bfloat16. bfloat16 keeps float32's exponent range, so
  no gradient scaler is needed. Measured on the 2-core reference machine: a 3D U-Net
  training step 2.5-2.6x faster than float32 (``reports/benchmarks.md``);
* anywhere else: plain float32.

``amp: false`` gives float32 everywhere. The precision a run used is written in its
report's manifest (``precision_name``).
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
import torch.nn as nn


@functools.lru_cache(maxsize=None)
def cpu_supports_bf16() -> bool:
    """True when this CPU runs bfloat16 convolutions and matrix products natively
    (oneDNN's own check; the ``avx512_bf16`` / ``amx_bf16`` CPU flags where that check
    is unavailable)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device_type: str, amp: bool = True) -> torch.dtype | None:
    """The dtype ``amp`` autocasts to on ``device_type``: float16 on CUDA, bfloat16 on a
    CPU with bfloat16 instructions, None (plain float32) otherwise or with ``amp`` off."""
    if not amp:
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def autocast(device_type: str, amp: bool = True):
    """``torch.autocast`` to :func:`autocast_dtype`, or a no-op context in float32."""
    dtype = autocast_dtype(device_type, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def needs_grad_scaler(device_type: str, amp: bool = True) -> bool:
    """float16 needs loss scaling against underflowing gradients; bfloat16 does not."""
    return autocast_dtype(device_type, amp) == torch.float16


def precision_name(device_type: str, amp: bool = True) -> str:
    """``"float16 autocast"``, ``"bfloat16 autocast"`` or ``"float32"``: recorded in
    every report's manifest and fingerprint."""
    dtype = autocast_dtype(device_type, amp)
    return "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


# ------------------------------------------------------------------ a oneDNN bfloat16 bug
#: bfloat16 3D convolutions on the CPU whose input has a spatial side of this many voxels or
#: fewer run in float32: oneDNN's bfloat16 weight gradient of a 3x3x3 convolution on a 2x2x2
#: input is NaN in about one step in seven (torch 2.13, AVX512-BF16; measured on 64-channel
#: maps). Scaled-down profiles reach such maps at their lowest levels (a 32^3 patch through
#: four halvings).
TINY_SIDE = 2


class _GuardedConv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and min(x.shape[2:]) <= TINY_SIDE and torch.is_autocast_cpu_enabled():
            with torch.autocast(device_type="cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class _GuardedConvTranspose3d(nn.ConvTranspose3d):
    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if x.device.type == "cpu" and min(x.shape[2:]) <= TINY_SIDE and torch.is_autocast_cpu_enabled():
            with torch.autocast(device_type="cpu", enabled=False):
                return super().forward(x.float(), output_size)
        return super().forward(x, output_size)


def guard_tiny_convolutions(model: nn.Module, device_type: str, amp: bool = True) -> nn.Module:
    """Where ``amp`` means bfloat16 on this CPU, make every 3D (transposed) convolution of
    ``model`` run in float32 on inputs with a side of at most :data:`TINY_SIDE` voxels (see
    above); elsewhere nothing changes. The modules keep their parameters and state-dict keys
    (only their class is swapped for a subclass). Returns ``model``."""
    if autocast_dtype(device_type, amp) != torch.bfloat16:
        return model
    for m in model.modules():
        if type(m) is nn.Conv3d:
            m.__class__ = _GuardedConv3d
        elif type(m) is nn.ConvTranspose3d:
            m.__class__ = _GuardedConvTranspose3d
    return model
