"""Whole-case inference: sliding window, flip test-time augmentation, probabilities to
labels, and writing a prediction back over its case.

The pipeline of :func:`predict_case`::

    crop to the brain -> normalise -> sliding window (MONAI) x flips -> mean probability
    -> uncrop, filling probabilities (not logits) with background -> threshold / argmax

Filling outside the crop is done on probabilities: a logit of 0 is probability 0.5,
which a threshold below 0.5 would turn into tumour (a known bug in public code).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference

from . import labels as L
from . import preprocess as P
from .io import write_nifti

#: all 8 flip combinations of the three spatial axes (as tensor dims 2, 3, 4)
ALL_FLIPS: tuple[tuple[int, ...], ...] = tuple(
    c for k in range(4) for c in itertools.combinations((2, 3, 4), k)
)


def parse_flips(tta: int | str | Sequence[Sequence[int]] | None) -> list[tuple[int, ...]]:
    """``None``/0/1 -> identity only; 8 or ``"all"`` -> the 8 combinations; 4 -> identity
    and the three single-axis flips; or an explicit list of axis tuples (tensor dims)."""
    if tta in (None, 0, 1, False):
        return [()]
    if tta in (8, "all", True):
        return list(ALL_FLIPS)
    if tta == 4:
        return list(ALL_FLIPS[:4])
    flips = [tuple(int(a) for a in f) for f in tta]
    for f in flips:
        if any(a not in (2, 3, 4) for a in f):
            raise ValueError(f"flip axes {f} must be tensor dims among 2, 3, 4")
    return flips


def activation(logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "sigmoid":
        return torch.sigmoid(logits)
    if kind == "softmax":
        return torch.softmax(logits, dim=1)
    raise ValueError(f"unknown output activation {kind!r}; expected 'sigmoid' or 'softmax'")


class FlipBatch(nn.Module):
    """Window-level flip TTA: each window goes through the network once as a batch of
    all its flips; outputs are flipped back, turned into probabilities and averaged.

    Used as the predictor of MONAI's sliding window, it needs one pass over the
    volume and one set of blending buffers for all flips (instead of one pass per
    flip). It averages every window over the flips of that same window, so it
    differs from flipping the whole image only in where window borders fall.
    """

    def __init__(self, model: nn.Module | Callable, flips: Sequence[tuple[int, ...]], output: str):
        super().__init__()
        self.model, self.flips, self.output = model, list(flips), output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        batch = torch.cat([torch.flip(x, f) if f else x for f in self.flips])
        logits = self.model(batch)
        if isinstance(logits, (list, tuple)):
            logits = logits[0]
        prob = activation(logits.float(), self.output)
        total = None
        for i, f in enumerate(self.flips):
            p = prob[i * b:(i + 1) * b]
            p = torch.flip(p, f) if f else p
            total = p if total is None else total + p
        return total / len(self.flips)


@torch.no_grad()
def sliding_window_probabilities(
    model: nn.Module | Callable, image: torch.Tensor, roi_size: Sequence[int], overlap: float = 0.5,
    mode: str = "gaussian", tta: int | str | Sequence = None, output: str = "sigmoid",
    sw_batch_size: int = 1, device: str | torch.device | None = None, progress: bool = False,
    tta_mode: str = "window", amp: bool = False,
) -> torch.Tensor:
    """Mean probability over flips of MONAI's sliding-window inference.

    ``image``: (B, C, X, Y, Z). Windows are blended with Gaussian (``mode="gaussian"``)
    or constant weights. ``tta_mode="window"`` batches the flips of each window
    (:class:`FlipBatch`, one pass); ``"image"`` runs one sliding pass per flipped
    image and averages, the textbook form. ``amp`` runs the network in float16 on CUDA.
    Returns (B, out_channels, X, Y, Z) float32 on the CPU.
    """
    device = torch.device(device) if device is not None else next(
        (p.device for p in getattr(model, "parameters", lambda: iter(()))()), torch.device("cpu"))
    flips = parse_flips(tta)
    sw = dict(roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, overlap=overlap, mode=mode,
              sw_device=device, device=torch.device("cpu"), progress=progress)
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp and device.type == "cuda"):
        if tta_mode == "window":
            return sliding_window_inference(image, predictor=FlipBatch(model, flips, output), **sw).float()
        if tta_mode != "image":
            raise ValueError(f"tta_mode must be 'window' or 'image', got {tta_mode!r}")
        total = None
        for f in flips:
            x = torch.flip(image, f) if f else image
            prob = sliding_window_inference(x, predictor=FlipBatch(model, [()], output), **sw).float()
            prob = torch.flip(prob, f) if f else prob
            total = prob if total is None else total.add_(prob)
        return total / len(flips)


def probabilities_to_labels(prob: np.ndarray, output: str = "sigmoid",
                            thresholds: Sequence[float] = (0.5, 0.5, 0.5)) -> np.ndarray:
    """(C, X, Y, Z) probabilities -> canonical labels.

    ``sigmoid``: channels WT, TC, ET, each thresholded (``thresholds`` in that order),
    then nested as :func:`brats_lib.labels.regions_to_labels`. ``softmax``: argmax over
    canonical classes 0..3.
    """
    if output == "sigmoid":
        thr = np.asarray(thresholds, dtype=np.float32).reshape(-1, *([1] * (prob.ndim - 1)))
        return L.regions_to_labels(prob > thr)
    if output == "softmax":
        return np.argmax(prob, axis=0).astype(np.uint8)
    raise ValueError(f"unknown output activation {output!r}")


def prepare_image(image: np.ndarray, normalisation: str = "zscore", foreground: str | None = None,
                  clip_percentiles: tuple[float, float] | None = None, crop_margin: int = 0):
    """Crop to the brain and normalise a raw (4, H, W, D) image, as training does.
    Returns (network input (C, h, w, d) float32, crop box)."""
    img, _, box = P.crop_to_brain(image, None, margin=crop_margin)
    kwargs = {"clip_percentiles": clip_percentiles} if normalisation == "zscore" else {}
    x = P.normalise(img, normalisation, **kwargs)
    if foreground:
        x = np.concatenate([x, P.foreground_channel(x if foreground == "all_positive" else img, foreground)])
    return x, box


def predict_case(model: nn.Module, image: np.ndarray, roi_size: Sequence[int], output: str = "sigmoid",
                 thresholds: Sequence[float] = (0.5, 0.5, 0.5), overlap: float = 0.5, mode: str = "gaussian",
                 tta=None, normalisation: str = "zscore", foreground: str | None = None,
                 clip_percentiles=None, device=None, sw_batch_size: int = 1,
                 postprocess: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, amp: bool = False):
    """Segment one raw case (4, H, W, D). Returns (canonical labels (H, W, D), probabilities
    (C, H, W, D) at full size). The case is cropped to the brain before sliding and the
    probabilities put back with background outside. ``postprocess(labels, probs)`` runs on
    the full-size result."""
    model.eval()
    x, box = prepare_image(image, normalisation, foreground, clip_percentiles)
    t = torch.from_numpy(x)[None]
    prob = sliding_window_probabilities(model, t, roi_size, overlap, mode, tta, output, sw_batch_size, device,
                                        amp=amp)[0].numpy()
    background = np.zeros(prob.shape[0], np.float32)
    if output == "softmax":
        background[0] = 1.0
    full = np.empty((prob.shape[0],) + tuple(box.full_shape), np.float32)
    for c in range(prob.shape[0]):
        full[c] = P.uncrop(prob[c], box, fill=float(background[c]))
    labels = probabilities_to_labels(full, output, thresholds)
    if postprocess is not None:
        labels = postprocess(labels, full)
    return labels, full


def write_prediction(path: str | Path, labels: np.ndarray, affine: np.ndarray, header=None,
                     convention: str = "brats2021") -> Path:
    """Write canonical labels in ``convention`` with the input's affine and header (atomic)."""
    return write_nifti(path, L.from_canonical(labels, convention).astype(np.uint8), affine, header)


def validation_fn(cases, roi_size: Sequence[int], output: str = "sigmoid", thresholds=(0.5, 0.5, 0.5),
                  overlap: float = 0.5, tta=None, normalisation: str = "zscore", foreground: str | None = None,
                  clip_percentiles=None, device=None, postprocess=None):
    """A ``val_fn`` for :func:`brats_lib.training.fit`: segment whole validation cases and
    return mean Dice per region (``dice_ET``, ``dice_TC``, ``dice_WT``) and ``dice_mean``.

    ``cases``: loaded cases (:class:`brats_lib.data.LoadedCase`) with labels.
    """
    from .metrics import dice

    def val(model: nn.Module) -> dict[str, float]:
        scores = {r: [] for r in L.REGIONS}
        for lc in cases:
            labels, _ = predict_case(model, lc.image, roi_size, output, thresholds, overlap, "gaussian", tta,
                                     normalisation, foreground, clip_percentiles, device, postprocess=postprocess)
            for r in L.REGIONS:
                scores[r].append(dice(L.region_mask(labels, r), L.region_mask(lc.label, r)))
        out = {f"dice_{r}": float(np.mean(v)) for r, v in scores.items()}
        out["dice_mean"] = float(np.mean(list(out.values())))
        return out

    return val
