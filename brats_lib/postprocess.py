"""Post-processing rules, found by name (as networks are in :mod:`brats_lib.models`).

Each paper's rule lives in its package (``brats_lib/papers/<paper>/postprocess.py``) and
registers itself here with :func:`register` under the name a predictor file stores:

============================  ==================================================
name                          rule
============================  ==================================================
``"optimized_unet"``          small / uncertain ET -> NCR (Optimized U-Net, Section 2.5)
``"hnfnetv2"``                fewer than ``min_et`` ET voxels -> NCR (HNF-Netv2, Section 4.1)
``"omnet"``                   small components removed, dark oedema -> NCR (OM-Net, Section III-D)
============================  ==================================================

Rules take canonical label maps (:mod:`brats_lib.labels`) and return a new one.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

_RULES: dict[str, Callable[..., np.ndarray]] = {}


def register(name: str):
    """Decorator: register a post-processing rule under ``name``."""

    def deco(fn):
        if name in _RULES and _RULES[name] is not fn:
            raise ValueError(f"post-processing {name!r} is registered twice")
        _RULES[name] = fn
        return fn

    return deco


def available() -> list[str]:
    return sorted(_RULES)


def get(name: str) -> Callable[..., np.ndarray]:
    """The rule registered as ``name`` (its paper package must have been imported:
    ``import brats_lib.papers`` registers them all)."""
    try:
        return _RULES[name]
    except KeyError:
        raise KeyError(f"unknown post-processing {name!r}; registered: {', '.join(available()) or 'none'} "
                       "(import brats_lib.papers to register every paper's rules)") from None
