"""File I/O: atomic writes (nothing half-written is ever seen under the final name) and
checkpoints (written atomically, read with ``weights_only=True``)."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn as nn


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success,
    delete it on failure. The suffix is kept so writers that look at it still work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, header=None) -> Path:
    """Write ``array`` with the reference affine and header (dtype taken from the array)."""
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(np.asarray(array), affine, hdr)
    img.set_data_dtype(np.asarray(array).dtype)
    if hdr is not None:
        img.header.set_zooms(header.get_zooms()[: np.asarray(array).ndim])
        img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


# ------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | Path, **state) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Read a checkpoint safely (``weights_only=True``: tensors and plain containers only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load the model weights of a ``last.pt`` or ``best-*.pt`` checkpoint into ``model``."""
    ckpt = load_checkpoint(path)
    unwrap(model).load_state_dict(ckpt["model"], strict=strict)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP and/or ``torch.compile`` wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
