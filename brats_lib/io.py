"""Atomic file writing: nothing half-written is ever seen under the final name."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np


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
