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
