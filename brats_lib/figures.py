"""Figures: BraTS-coloured slice overlays, cases, training curves, saving PNGs.

* :func:`overlay`, :func:`legend_handles`, :func:`label_rgba` - a label map over a slice.
* :func:`tumour_slice` - the axial slice with the most tumour.
* :func:`plot_case`, :func:`plot_training_curves`, :func:`prediction_figure` - whole figures
  (a case's modalities; training curves; the reference beside predictions).
* :func:`save_figure` - an atomic PNG write into a report's ``figures/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import labels as L
from .io import atomic_path


def save_figure(fig, out_dir: str | Path, name: str, dpi: int = 110) -> Path:
    path = Path(out_dir) / "figures" / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def label_rgba(label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Canonical label slice -> RGBA image in BraTS colours (transparent background)."""
    rgba = np.zeros(label.shape + (4,), np.float32)
    for lab, col in L.COLOURS.items():
        sel = label == lab
        rgba[sel, :3] = col
        rgba[sel, 3] = alpha
    return rgba


def overlay(ax, image2d: np.ndarray, label2d: np.ndarray | None = None, title: str | None = None, alpha: float = 0.5):
    """Grey-scale slice with the label in BraTS colours (NCR red, ED green, ET yellow).
    Arrays are (X, Y); shown with X horizontal and Y vertical."""
    lo, hi = np.percentile(image2d[image2d != 0], (0.5, 99.5)) if np.any(image2d != 0) else (0, 1)
    ax.imshow(image2d.T, cmap="gray", origin="lower", vmin=lo, vmax=hi)
    if label2d is not None:
        ax.imshow(label_rgba(label2d, alpha).transpose(1, 0, 2), origin="lower")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def legend_handles():
    from matplotlib.patches import Patch

    return [Patch(color=L.COLOURS[k], label=L.CLASS_NAMES[k]) for k in (L.NCR, L.ED, L.ET)]


def tumour_slice(label: np.ndarray) -> int:
    """Axial index (last axis) with the most tumour; the middle slice if there is none."""
    area = (label > 0).sum(axis=(0, 1))
    return int(np.argmax(area)) if area.any() else label.shape[-1] // 2


def plot_case(image: np.ndarray, label: np.ndarray | None, z: int | None = None, modalities=("t1", "t1ce", "t2", "flair"),
              title: str | None = None, axes=None):
    """The four modalities of one axial slice and the label over FLAIR."""
    import matplotlib.pyplot as plt

    z = tumour_slice(label) if (z is None and label is not None) else (image.shape[-1] // 2 if z is None else z)
    if axes is None:
        fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
    else:
        fig = axes[0].figure
    for i, m in enumerate(modalities):
        overlay(axes[i], image[i][..., z], None, m.upper() if m != "t1ce" else "T1ce")
    overlay(axes[4], image[3][..., z], label[..., z] if label is not None else None, "FLAIR + labels")
    if title:
        axes[0].text(-0.1, 0.5, title, transform=axes[0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    return fig


def plot_training_curves(log: pd.DataFrame | str | Path, metrics: Sequence[str] | None = None, title: str | None = None):
    """Training loss and validation metrics per epoch from a ``log.csv``."""
    import matplotlib.pyplot as plt

    log = pd.read_csv(log) if not isinstance(log, pd.DataFrame) else log
    metrics = list(metrics or [c for c in log.columns if c.startswith("val_")])
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(10 if metrics else 5, 3.2), squeeze=False)
    axes[0, 0].plot(log["epoch"], log["train_loss"], marker=".")
    axes[0, 0].set(xlabel="epoch", ylabel="training loss")
    if metrics:
        for m in metrics:
            d = log[["epoch", m]].dropna()
            axes[0, 1].plot(d["epoch"], d[m], marker="o", label=m.removeprefix("val_"))
        axes[0, 1].set(xlabel="epoch", ylabel="validation")
        axes[0, 1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def prediction_figure(image: np.ndarray, reference: np.ndarray | None, predictions: dict[str, np.ndarray],
                      title: str | None = None, z: int | None = None, modality: str = "flair", show_image: bool = True):
    """One axial slice of a case: the image alone (``show_image``), the reference, then
    each of ``predictions`` (title -> canonical label map) over it, one legend below.
    ``image``: (4, H, W, D) in :data:`~brats_lib.labels.MODALITIES` order; ``z``: the
    slice (default: the reference's, else the first prediction's, slice with most tumour)."""
    import matplotlib.pyplot as plt

    first = next(iter(predictions.values()), None)
    if z is None:
        z = tumour_slice(reference if reference is not None and reference.any() else first)
    flair = image[L.MODALITIES.index(modality)][..., z]
    panels = ([(None, modality.upper())] if show_image else []) + [(reference, "reference")]
    panels += [(lab, name) for name, lab in predictions.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2), squeeze=False)
    for ax, (lab, name) in zip(axes[0], panels):
        overlay(ax, flair, None if lab is None else lab[..., z], name)
    fig.legend(handles=legend_handles(), loc="lower center", ncol=4, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
