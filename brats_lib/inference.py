"""Whole-case inference: sliding window, flip test-time augmentation, probabilities to
labels, and writing a prediction back over its case.

The pipeline of :func:`predict_case`::

    crop to the brain -> normalise -> sliding window (MONAI) x flips -> mean probability
    -> uncrop, filling probabilities (not logits) with background -> threshold / argmax

Filling outside the crop is done on probabilities: a logit of 0 is probability 0.5,
which a threshold below 0.5 would turn into tumour (a known bug in public code).
"""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference

from . import labels as L
from . import preprocess as P
from .io import load_checkpoint, save_checkpoint, write_nifti
from .precision import autocast

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
    if isinstance(tta, (int, str)):
        raise ValueError(f"tta={tta!r}: expected 0 or 1 (no flips), 4, 8 / 'all', or a list of flip-axis tuples")
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
    Given several models (an ensemble, e.g. the best checkpoints of a fold), their
    probabilities are averaged too.

    Used as the predictor of MONAI's sliding window, it needs one pass over the
    volume and one set of blending buffers for all flips (instead of one pass per
    flip). It averages every window over the flips of that same window, so it
    differs from flipping the whole image only in where window borders fall.
    """

    def __init__(self, model: nn.Module | Callable | Sequence[nn.Module], flips: Sequence[tuple[int, ...]], output: str):
        super().__init__()
        self.models = list(model) if isinstance(model, (list, tuple)) else [model]
        self.flips, self.output = list(flips), output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        batch = torch.cat([torch.flip(x, f) if f else x for f in self.flips])
        total = None
        for model in self.models:
            prob = activation(_forward(model, batch).float(), self.output)
            for i, f in enumerate(self.flips):
                p = prob[i * b:(i + 1) * b]
                p = torch.flip(p, f) if f else p
                total = p if total is None else total + p
        return total / (len(self.flips) * len(self.models))


def _forward(model: nn.Module | Callable, batch: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` (the main output where it returns several). On the CPU a batch
    of one is run as a batch of two: oneDNN's 3D convolutions are several times slower
    per sample at batch size 1 (measured: 7x for 8 channels at 32^3 on 2 cores)."""
    single = batch.shape[0] == 1 and batch.device.type == "cpu"
    out = model(batch.expand(2, *batch.shape[1:]) if single else batch)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out[:1] if single else out


@torch.no_grad()
def sliding_window_probabilities(
    model: nn.Module | Callable, image: torch.Tensor, roi_size: Sequence[int], overlap: float = 0.5,
    mode: str = "gaussian", tta: int | str | Sequence = None, output: str = "sigmoid",
    sw_batch_size: int = 2, device: str | torch.device | None = None, progress: bool = False,
    tta_mode: str = "window", amp: bool = False,
) -> torch.Tensor:
    """Mean probability over flips of MONAI's sliding-window inference.

    ``image``: (B, C, X, Y, Z). Windows are blended with Gaussian (``mode="gaussian"``)
    or constant weights. ``tta_mode="window"`` batches the flips of each window
    (:class:`FlipBatch`, one pass); ``"image"`` runs one sliding pass per flipped
    image and averages, the textbook form. ``amp`` runs the network in mixed precision
    (float16 on CUDA, bfloat16 on CPUs that have it: :mod:`brats_lib.precision`).
    Returns (B, out_channels, X, Y, Z) float32 on the CPU.
    """
    first = model[0] if isinstance(model, (list, tuple)) else model
    device = torch.device(device) if device is not None else next(
        (p.device for p in getattr(first, "parameters", lambda: iter(()))()), torch.device("cpu"))
    flips = parse_flips(tta)
    sw = dict(roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, overlap=overlap, mode=mode,
              sw_device=device, device=torch.device("cpu"), progress=progress)
    with autocast(device.type, amp):
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
                            thresholds: Sequence[float] = (0.5, 0.5, 0.5), label_rule: str = "overwrite") -> np.ndarray:
    """(C, X, Y, Z) probabilities -> canonical labels.

    ``sigmoid``: channels WT, TC, ET, each thresholded (``thresholds`` in that order),
    then turned into labels by ``label_rule`` (:func:`brats_lib.labels.regions_to_labels`:
    ``"overwrite"``, ``"nested"`` or ``"nvidia"``). ``softmax``: argmax over canonical
    classes 0..3.
    """
    if output == "sigmoid":
        thr = np.asarray(thresholds, dtype=np.float32).reshape(-1, *([1] * (prob.ndim - 1)))
        return L.regions_to_labels(prob > thr, rule=label_rule)
    if output == "softmax":
        return np.argmax(prob, axis=0).astype(np.uint8)
    raise ValueError(f"unknown output activation {output!r}")


def prepare_image(image: np.ndarray, normalisation: str = "zscore", foreground: str | None = None,
                  clip_percentiles: tuple[float, float] | None = None, crop_margin: int = 0,
                  centre_crop: Sequence[int] | None = None):
    """Crop to the brain (or, with ``centre_crop``, to a fixed box of that size at the
    volume's centre, as HNF-Net's 176 x 224 x 155) and normalise a raw (4, H, W, D) image,
    as training does. Returns (network input (C, h, w, d) float32, crop box)."""
    if centre_crop is not None:
        box = P.centre_box(image.shape[1:], centre_crop)
        img = image[(slice(None),) + box.slices]
    else:
        img, _, box = P.crop_to_brain(image, None, margin=crop_margin)
    kwargs = {"clip_percentiles": clip_percentiles} if normalisation.startswith("zscore") else {}
    x = P.normalise(img, normalisation, **kwargs)
    if foreground:
        x = np.concatenate([x, P.foreground_channel(x if foreground == "all_positive" else img, foreground)])
    return x, box


def predict_case(model: nn.Module | Sequence[nn.Module], image: np.ndarray, roi_size: Sequence[int], output: str = "sigmoid",
                 thresholds: Sequence[float] = (0.5, 0.5, 0.5), overlap: float = 0.5, mode: str = "gaussian",
                 tta=None, normalisation: str = "zscore", foreground: str | None = None,
                 clip_percentiles=None, device=None, sw_batch_size: int = 2,
                 postprocess: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, amp: bool = False,
                 centre_crop: Sequence[int] | None = None, label_rule: str = "overwrite", tta_mode: str = "window"):
    """Segment one raw case (4, H, W, D). Returns (canonical labels (H, W, D), probabilities
    (C, H, W, D) at full size). The case is cropped to the brain (or to ``centre_crop``)
    before sliding and the probabilities put back with background outside.
    ``postprocess(labels, probs)`` runs on the full-size result. A list of models is an
    ensemble: probabilities are averaged. ``overlap`` may be one fraction per axis.
    ``label_rule``: see :func:`probabilities_to_labels`; ``tta_mode``: flips per window
    (``"window"``) or of the whole (cropped) volume (``"image"``), see
    :func:`sliding_window_probabilities`."""
    for m in model if isinstance(model, (list, tuple)) else [model]:
        m.eval()
    x, box = prepare_image(image, normalisation, foreground, clip_percentiles, centre_crop=centre_crop)
    t = torch.from_numpy(x)[None]
    prob = sliding_window_probabilities(model, t, roi_size, overlap, mode, tta, output, sw_batch_size, device,
                                        tta_mode=tta_mode, amp=amp)[0].numpy()
    background = np.zeros(prob.shape[0], np.float32)
    if output == "softmax":
        background[0] = 1.0
    full = np.empty((prob.shape[0],) + tuple(box.full_shape), np.float32)
    for c in range(prob.shape[0]):
        full[c] = P.uncrop(prob[c], box, fill=float(background[c]))
    labels = probabilities_to_labels(full, output, thresholds, label_rule)
    if postprocess is not None:
        labels = postprocess(labels, full)
    return labels, full


def write_prediction(path: str | Path, labels: np.ndarray, affine: np.ndarray, header=None,
                     convention: str = "brats2021") -> Path:
    """Write canonical labels in ``convention`` with the input's affine and header (atomic)."""
    return write_nifti(path, L.from_canonical(labels, convention).astype(np.uint8), affine, header)


def validation_fn(cases, roi_size: Sequence[int], output: str = "sigmoid", thresholds=(0.5, 0.5, 0.5),
                  overlap: float = 0.5, tta=None, normalisation: str = "zscore", foreground: str | None = None,
                  clip_percentiles=None, device=None, postprocess=None, amp: bool = False,
                  centre_crop: Sequence[int] | None = None, mode: str = "gaussian", sw_batch_size: int = 2,
                  label_rule: str = "overwrite"):
    """A ``val_fn`` for :func:`brats_lib.training.fit`: segment whole validation cases and
    return mean Dice per region (``dice_ET``, ``dice_TC``, ``dice_WT``) and ``dice_mean``.

    ``cases``: loaded cases (:class:`brats_lib.data.LoadedCase`) with labels.
    """
    from .metrics import dice

    def val(model: nn.Module) -> dict[str, float]:
        scores = {r: [] for r in L.REGIONS}
        for lc in cases:
            labels, _ = predict_case(model, lc.image, roi_size, output, thresholds, overlap, mode, tta,
                                     normalisation, foreground, clip_percentiles, device, sw_batch_size,
                                     postprocess=postprocess, amp=amp, centre_crop=centre_crop,
                                     label_rule=label_rule)
            for r in L.REGIONS:
                scores[r].append(dice(L.region_mask(labels, r), L.region_mask(lc.label, r)))
        out = {f"dice_{r}": float(np.mean(v)) for r, v in scores.items()}
        out["dice_mean"] = float(np.mean(list(out.values())))
        return out

    return val


# ------------------------------------------------------------------ predictor files
#: what a predictor file holds besides the weights (written by :func:`save_predictor`)
PREDICTOR_KEYS = ("model", "model_kwargs", "roi_size", "output", "thresholds", "overlap", "tta", "normalisation",
                  "foreground", "postprocess", "postprocess_kwargs")
#: keys added later, with the value that files written without them mean
PREDICTOR_DEFAULTS = {"mode": "gaussian", "centre_crop": None, "clip_percentiles": None, "label_rule": "overwrite",
                      "tta_mode": "window", "amp": False}


def save_predictor(path: str | Path, models_: Sequence[nn.Module], model: str, model_kwargs: dict,
                   roi_size: Sequence[int], output: str = "sigmoid", thresholds: Sequence[float] = (0.5, 0.5, 0.5),
                   overlap: float = 0.5, tta: int = 8, normalisation: str = "zscore", foreground: str | None = None,
                   postprocess: str | None = None, postprocess_kwargs: dict | None = None, mode: str = "gaussian",
                   centre_crop: Sequence[int] | None = None,
                   clip_percentiles: Sequence[float] | None = None, label_rule: str = "overwrite",
                   tta_mode: str = "window", amp: bool = False) -> Path:
    """Write a trained model (one network or an ensemble) and every inference setting
    it needs to one file, readable with ``torch.load(weights_only=True)``.

    ``model`` is a registered name (:mod:`brats_lib.models`); ``postprocess`` the name of
    a function in :mod:`brats_lib.postprocess` (or None); ``amp``: mixed precision, as the
    notebook that trained it predicted (:mod:`brats_lib.precision`).
    """
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model_kwargs.items()}
    return save_checkpoint(path, kind="brats_lib.predictor", weights=[m.state_dict() for m in models_], model=model,
                           model_kwargs=kwargs, roi_size=[int(s) for s in roi_size], output=output,
                           thresholds=[float(t) for t in thresholds],
                           overlap=[float(o) for o in overlap] if isinstance(overlap, (list, tuple)) else float(overlap),
                           tta=int(tta),
                           normalisation=normalisation, foreground=foreground, postprocess=postprocess,
                           postprocess_kwargs=dict(postprocess_kwargs or {}), mode=mode,
                           centre_crop=None if centre_crop is None else [int(c) for c in centre_crop],
                           clip_percentiles=None if clip_percentiles is None else [float(c) for c in clip_percentiles],
                           label_rule=label_rule, tta_mode=tta_mode, amp=bool(amp))


def load_predictor(path: str | Path, device=None) -> tuple[list[nn.Module], dict]:
    """(networks in eval mode, settings) from a :func:`save_predictor` file."""
    from . import models as registry

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ck = load_checkpoint(path)
    except Exception as e:  # not a torch file, or one holding more than weights
        raise ValueError(f"checkpoint {path} cannot be read as a brats_lib predictor: {e}") from None
    if not isinstance(ck, dict) or ck.get("kind") != "brats_lib.predictor":
        raise ValueError(f"checkpoint {path} is not a brats_lib predictor file (write one with save_predictor; "
                         "training checkpoints hold weights without the inference settings)")
    nets = []
    for sd in ck["weights"]:
        net = registry.build(ck["model"], **ck["model_kwargs"])
        net.load_state_dict(sd)
        nets.append(net.to(device or "cpu").eval())
    return nets, {**{k: ck[k] for k in PREDICTOR_KEYS}, **{k: ck.get(k, v) for k, v in PREDICTOR_DEFAULTS.items()}}


def predict_with(nets: Sequence[nn.Module], settings: dict, image: np.ndarray, device=None, tta=None):
    """Segment a raw (4, H, W, D) image as a predictor file's ``settings`` say (TTA flips
    overridable); returns (canonical labels, probabilities)."""
    from . import postprocess as post

    fn = None
    if settings["postprocess"]:
        try:
            rule = post.get(settings["postprocess"])
        except KeyError as e:
            raise ValueError(f"the predictor file's post-processing: {e.args[0]}") from None
        kw = settings["postprocess_kwargs"]
        fn = lambda labels, probs: rule(labels, probs, **kw)  # noqa: E731
    return predict_case(list(nets), image, settings["roi_size"], settings["output"], settings["thresholds"],
                        settings["overlap"], settings["mode"], settings["tta"] if tta is None else tta,
                        settings["normalisation"], settings["foreground"], settings["clip_percentiles"], device=device,
                        postprocess=fn, centre_crop=settings["centre_crop"], label_rule=settings["label_rule"],
                        tta_mode=settings["tta_mode"], amp=settings["amp"])


# ------------------------------------------------------------------ whole-volume flips
def flip_average(probabilities: Callable, lc, tta: int = 1) -> np.ndarray:
    """Test-time flips of a whole case (a :class:`~brats_lib.data.LoadedCase`): the raw
    image flipped along each combination of ``tta`` (:func:`parse_flips`), the model's
    probability maps (``probabilities(case)``) flipped back and averaged."""
    total = None
    flips = parse_flips(tta)
    for f in flips:
        axes = tuple(a - 1 for a in f)  # tensor dims 2, 3, 4 -> image axes 1, 2, 3 (C, H, W, D)
        case = dataclasses.replace(lc, image=np.ascontiguousarray(np.flip(lc.image, axes)) if f else lc.image,
                                   label=None)
        prob = probabilities(case)
        prob = np.flip(prob, axes) if f else prob
        total = prob.astype(np.float32, copy=True) if total is None else total + prob
    return total / len(flips)
