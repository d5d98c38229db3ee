"""Model registry: every notebook gets its networks by name.

>>> from brats_lib import models
>>> net = models.build("unet3d", in_channels=4, out_channels=3)
>>> models.available()
['unet3d', ...]

The shared networks live here, one per file: ``blocks`` (CBAM and other small blocks),
``unet3d`` (the configurable 3D U-Net), ``unetr`` and ``segresnet_vae`` (MONAI's, as the
Optimized U-Net paper's rows use them). :func:`build` imports them on first use. Each
paper's own networks live in its package (``brats_lib/papers/<paper>/networks.py``) and
register themselves with :func:`register` when it is imported (``import brats_lib.papers``
registers all; the model registry never imports the papers, which sit above it).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_loaded = False


def register(name: str, description: str = ""):
    """Decorator: register a builder (class or function returning an ``nn.Module``)."""

    def deco(builder):
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = builder
        _DESCRIPTIONS[name] = description or (builder.__doc__ or "").strip().splitlines()[0]
        return builder

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    _loaded = True


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def describe() -> dict[str, str]:
    _load_all()
    return {k: _DESCRIPTIONS[k] for k in sorted(_REGISTRY)}


def build(name: str, **kwargs) -> nn.Module:
    """Build model ``name`` with keyword arguments passed to its constructor."""
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)
