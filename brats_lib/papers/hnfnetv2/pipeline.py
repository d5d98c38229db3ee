"""Jia et al., "HNF-Netv2 for Brain Tumor Segmentation using multi-modal MR Imaging"
(BraTS 2021): the experiment pipeline of the paper, read top to bottom beside Section 4.

* Section 3 - networks: :mod:`brats_lib.papers.hnfnetv2.networks` (``hnf_unet3d``, ``hnfnet``,
  ``hnfnet_intra``, ``hnfnetv2``).
* Section 4.1, pre-processing - each sequence clipped inside the brain to its
  [0.5 %, 99.5 %] intensity window, then z-scored (background stays 0).
* Section 4.1, training - random crops of the four concatenated sequences (128^3),
  flips / rotations within +-10 degrees / per-channel intensity shift and scale
  (:class:`~brats_lib.papers.hnfnetv2.augmentation.HNFNetAugmentation`), generalized Dice + BCE on the WT, TC,
  ET regions, Adam (0.9, 0.999), lr 1e-3, 5 linear warm-up epochs then poly decay
  (power 0.9), L2 weight decay 1e-5, batch 4, 250 epochs.
* Section 4.1, inference - a 176 x 224 x 155 centre crop, sliding 128^3 patches with
  stride 32 x 32 x 27, predictions of the 8 flip versions and of the overlapping
  patches averaged (uniform weights); ET replaced by NCR/NET when fewer than 200 ET
  voxels are predicted (:func:`~.postprocess.small_et_to_ncr`).
* Section 4.2 - Table 1 (five-fold cross-validation ablation: :func:`cross_validate_rows`),
  Tables 2-3 (the five fold models ensembled: :func:`evaluate_ensemble`). The paper's
  numbers and claims are in :mod:`~brats_lib.papers.hnfnetv2.paper`, the tables and figures
  made from these results in :mod:`~brats_lib.papers.hnfnetv2.report`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from brats_lib import losses, metrics as M, models
from .augmentation import HNFNetAugmentation
from brats_lib.data import LoadedCase
from brats_lib.inference import predict_case, prepare_image, probabilities_to_labels, save_predictor, validation_fn
from brats_lib.sampling import PatchDataset
from brats_lib.io import load_weights
from brats_lib.training import FitResult, TrainConfig, fit
from .params import HNFNetv2Params
from .postprocess import small_et_to_ncr
from brats_lib.pipeline import Pipeline, Trained, register, with_dice_mean
from . import paper
from .paper import PAPER_CROP, ROWS

#: Section 4.1 pre-processing: intensity window inside the brain, in percent
CLIP_PERCENTILES = (0.5, 99.5)


# ------------------------------------------------------------------ networks and loss
def model_kwargs(name: str, p: HNFNetv2Params=None, paper_size: bool = False) -> dict:
    """Constructor arguments of network ``name``: the paper's sizes (``paper_size``) or the
    profile's scaled ones (``p.unet_filters``, ``p.width``, ``p.blocks``, ``p.bases``)."""
    if name not in ROWS.values():
        raise KeyError(f"unknown HNF-Net row network {name!r}; expected one of {sorted(ROWS.values())}")
    if paper_size:
        return dict(in_channels=4, out_channels=3)
    if name == "hnf_unet3d":
        return dict(in_channels=4, out_channels=3, filters=list(p.unet_filters))
    return dict(in_channels=4, out_channels=3, width=p.width, blocks=p.blocks, bases=p.bases,
                iterations=p.em_iterations)


def build_model(name: str, p: HNFNetv2Params=None, paper_size: bool = False) -> nn.Module:
    return models.build(name, **model_kwargs(name, p, paper_size))


def loss_function() -> nn.Module:
    """Generalized Dice + binary cross-entropy on the three sigmoid regions (WT, TC, ET)."""
    return losses.region_loss("gdl_bce", batch_dice=True)


# ------------------------------------------------------------------ data
def network_input(lc: LoadedCase) -> tuple[np.ndarray, np.ndarray | None]:
    """(input (4, h, w, d), label cropped alike): crop to the brain, clip each sequence to
    its [0.5, 99.5] percentile window inside the brain, z-score inside the brain."""
    x, box = prepare_image(lc.image, "zscore", None, CLIP_PERCENTILES)
    return x, (lc.label[box.slices] if lc.label is not None else None)


def patch_dataset(cases: Sequence[LoadedCase], p: HNFNetv2Params, seed: int) -> PatchDataset:
    """Random ``p.patch_size`` crops (``p.fg_prob`` of them centred on tumour; the paper: 0)
    with the paper's augmentation, targets = WT, TC, ET masks."""
    aug = HNFNetAugmentation() if p.augment else None
    return PatchDataset([network_input(lc) for lc in cases], p.patch_size, p.steps_per_epoch * p.batch_size,
                        fg_prob=p.fg_prob, target="regions", transform=aug, seed=seed, passes=p.epoch_pass)


def overlap_from_stride(patch: Sequence[int], stride: Sequence[int]) -> list[float]:
    """MONAI's sliding-window ``overlap`` per axis that gives ``stride`` (1 - stride / patch)."""
    if any(s < 1 or s > n for s, n in zip(stride, patch)):
        raise ValueError(f"window stride {list(stride)} must be between 1 and the patch size {list(patch)}")
    return [1.0 - s / n for s, n in zip(stride, patch)]


def inference_settings(p: HNFNetv2Params) -> dict:
    """Keyword arguments of :func:`~brats_lib.inference.predict_case` for Section 4.1."""
    return dict(roi_size=list(p.patch_size), output="sigmoid", thresholds=(0.5, 0.5, 0.5),
                overlap=overlap_from_stride(p.patch_size, p.window_stride), mode="constant",
                normalisation="zscore", foreground=None, clip_percentiles=CLIP_PERCENTILES,
                centre_crop=None if p.inference_crop is None else list(p.inference_crop),
                sw_batch_size=p.sw_batch_size)


def predict(model, lc: LoadedCase, p: HNFNetv2Params, tta=None, post: bool = True, device=None):
    """(labels, probabilities (3, H, W, D)) of one raw case: centre crop, sliding window with
    the profile's stride, uniform averaging over windows and ``tta`` flips, thresholds 0.5,
    and (``post``) the ET-volume rule. ``model`` may be a list (the fold ensemble)."""
    rule = (lambda labels, probs: small_et_to_ncr(labels, probs, p.min_et)) if post else None
    return predict_case(model, lc.image, tta=tta, device=device, postprocess=rule,
                        amp=p.amp, **inference_settings(p))


def to_labels(probs: np.ndarray, p: HNFNetv2Params, post: bool = True) -> np.ndarray:
    """Region probabilities (WT, TC, ET) -> labels as :func:`predict` does: thresholds 0.5,
    then (``post``) the ET-volume rule."""
    labels = probabilities_to_labels(probs, "sigmoid", inference_settings(p)["thresholds"])
    return small_et_to_ncr(labels, probs, p.min_et) if post else labels


def validation(cases: Sequence[LoadedCase], p: HNFNetv2Params, device=None):
    """``val_fn`` for :func:`~brats_lib.training.fit` (training curves): mean Dice per region
    over whole validation cases, Section 4.1 inference without TTA and post-processing."""
    s = inference_settings(p)
    return validation_fn(cases, s["roi_size"], "sigmoid", s["thresholds"], s["overlap"], None, "zscore", None,
                         CLIP_PERCENTILES, device, amp=p.amp,
                         centre_crop=s["centre_crop"], mode="constant", sw_batch_size=s["sw_batch_size"])


# ------------------------------------------------------------------ training
def train_config(p: HNFNetv2Params) -> TrainConfig:
    """Section 4.1: Adam (0.9, 0.999), linear warm-up then poly (0.9) decay, L2 weight decay."""
    return TrainConfig(epochs=p.epochs, batch_size=p.batch_size, optimizer="adam", lr=p.lr, betas=(0.9, 0.999),
                       channels_last=p.channels_last,
                       weight_decay=p.weight_decay, schedule="poly", poly_power=0.9, warmup_epochs=p.warmup_epochs,
                       schedule_per_epoch=True,
                       val_every=p.val_every, best_metric="dice_mean", keep_best=1, amp=p.amp,
                       num_workers=p.num_workers, seed=p.seed, progress=p.progress)


def train_fold(name: str, fold: int, train: Sequence[LoadedCase], val: Sequence[LoadedCase], p: HNFNetv2Params,
               out_dir: str | Path, device=None) -> FitResult:
    """Train network ``name`` on one fold; the model of the last epoch is the fold's model
    (the paper selects none)."""
    torch.manual_seed(p.seed + fold)
    model = build_model(name, p)
    val_fn = validation(val, p, device) if p.val_every > 0 else None
    return fit(model, loss_function(), patch_dataset(train, p, seed=p.seed + 1000 * fold), train_config(p),
               out_dir, val_fn=val_fn, device=device)


def load_final(res: FitResult, name: str, p: HNFNetv2Params) -> nn.Module:
    """The last-epoch weights of a fold (``last.pt``), in eval mode."""
    return load_weights(build_model(name, p), Path(res.out_dir) / "last.pt").eval()


def export_predictor(path: str | Path, nets: Sequence[nn.Module], name: str, p: HNFNetv2Params) -> Path:
    """Write the fold ensemble of ``name`` with the Section 4.1 inference settings as a
    predictor file for ``python -m brats_lib predict``."""
    s = inference_settings(p)
    return save_predictor(path, nets, name, model_kwargs(name, p), s["roi_size"], "sigmoid", s["thresholds"],
                          s["overlap"], p.tta, "zscore", None, "hnfnetv2", {"min_et": p.min_et}, mode="constant",
                          centre_crop=s["centre_crop"], clip_percentiles=CLIP_PERCENTILES, amp=p.amp)


def real_case_params(p: HNFNetv2Params, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> HNFNetv2Params:
    """``p`` for a real BraTS volume of voxel size ``spacing`` (mm): the paper's 176 x 224 x 155
    mm centre crop (BraTS voxels are 1 mm) in that case's voxels, whatever the profile's
    (phantoms are smaller; a profile that crops to the brain keeps doing so), and windows
    every ``p.real_window_stride`` (default: the patch size, no overlap)."""
    crop = [max(int(round(c / s)), n) for c, s, n in zip(PAPER_CROP, spacing, p.patch_size)]
    return dataclasses.replace(p, inference_crop=crop if p.inference_crop else None,
                               window_stride=list(p.real_window_stride or p.patch_size))


# ------------------------------------------------------------------ Table 1: every row on every fold
@dataclass
class CrossValidation:
    """Every Table 1 row trained on every fold and scored on the fold's validation cases;
    keys are ``(network, fold)`` (networks as in :data:`~.paper.ROWS`' values)."""

    #: one row per (network, validation case): row, fold, case, the case_scores columns, Dice mean
    per_case: pd.DataFrame
    #: the training runs (logs, checkpoint folder, training and validation seconds)
    fits: dict[tuple[str, int], FitResult]
    #: the fold models: the last epoch's weights, in eval mode on the training device
    networks: dict[tuple[str, int], nn.Module]
    #: wall time of training plus the validation cases' inference
    seconds: dict[tuple[str, int], float]

    @property
    def train_seconds(self) -> float:
        """Seconds in training steps, over every row and fold."""
        return sum(f.train_seconds for f in self.fits.values())

    @property
    def val_seconds(self) -> float:
        """Seconds in the validation function during training (the curves), over every row and fold."""
        return sum(f.val_seconds for f in self.fits.values())

    def fold_models(self, name: str) -> list[nn.Module]:
        """The fold models of network ``name`` in fold order: the ensemble of Tables 2-3."""
        return [self.networks[name, k] for k in sorted(k for n, k in self.networks if n == name)]

    def logs(self, fold: int = 0) -> dict[str, pd.DataFrame]:
        """Training log (``log.csv``) of every row on ``fold``, by the paper's row label."""
        return {label: self.fits[name, fold].log for label, name in paper.TABLE1_ROWS}


def cross_validate_rows(folds: Sequence[Mapping[str, Sequence[str]]], cases: Mapping[str, LoadedCase],
                        p: HNFNetv2Params, runs_dir: str | Path, device: torch.device | str | None = None,
                        progress: bool = True) -> CrossValidation:
    """Table 1: train each row's network on every fold (:func:`train_fold`, checkpoints in
    ``runs_dir/<network>/fold<k>``), keep its last epoch (:func:`load_final`), segment the
    fold's validation cases as Section 4.1 (``p.tta_ablation`` flips per window, the ET
    rule: :func:`predict`) and score each (:func:`brats_lib.metrics.case_scores`).

    A loop of this paper's own rather than :func:`brats_lib.pipeline.cross_validate`: flips
    are averaged per window, as the paper describes, where the common
    :meth:`HNFNetv2Pipeline.predict` flips whole volumes; rows are keyed by network (as
    :data:`~.paper.CLAIMS` and the checkpoint folders), not by the paper's labels."""
    fits, nets, seconds, table = {}, {}, {}, []
    bar = tqdm([(name, k) for name in ROWS.values() for k in range(len(folds))], desc="rows x folds",
               disable=not progress)
    for name, k in bar:
        bar.set_postfix(row=name, fold=k)
        train = [cases[c] for c in folds[k]["train"]]
        val = [cases[c] for c in folds[k]["val"]]
        t = time.time()
        fits[name, k] = train_fold(name, k, train, val, p, Path(runs_dir) / name / f"fold{k}", device)
        nets[name, k] = net = load_final(fits[name, k], name, p).to(device)
        for lc in val:
            labels, _ = predict(net, lc, p, tta=p.tta_ablation, device=device)
            table.append({"row": name, "fold": k, "case": lc.case_id, **M.case_scores(labels, lc.label, lc.spacing)})
        seconds[name, k] = time.time() - t
    return CrossValidation(with_dice_mean(pd.DataFrame(table)), fits, nets, seconds)


def evaluate_ensemble(nets: Sequence[nn.Module], cases: Sequence[LoadedCase], p: HNFNetv2Params,
                      device: torch.device | str | None = None, progress: bool = True) -> pd.DataFrame:
    """Tables 2-3 style: the fold models ensembled (probabilities averaged) segment each of
    ``cases`` with ``p.tta`` flips and the ET rule; one row per case (``case`` and the
    :func:`~brats_lib.metrics.case_scores` columns), empty without cases."""
    rows = []
    for lc in tqdm(cases, desc="ensemble on held-out cases", disable=not progress):
        labels, _ = predict(list(nets), lc, p, tta=p.tta, device=device)
        rows.append({"case": lc.case_id, **M.case_scores(labels, lc.label, lc.spacing)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the common interface
@register
class HNFNetv2Pipeline(Pipeline):
    """:class:`~brats_lib.pipeline.Pipeline` of HNF-Netv2: a row's network is its last epoch's;
    sliding window with the profile's stride, thresholds 0.5; the submitted (``final``)
    rule adds the ET volume rule (:func:`~.postprocess.small_et_to_ncr`)."""

    notebook = "hnfnetv2"
    rows = ROWS

    def train_fold(self, row, fold, train, val, p: HNFNetv2Params, out_dir, device=None) -> Trained:
        res = train_fold(ROWS[row], fold, train, val, p, out_dir, device)
        net = load_final(res, ROWS[row], p).to(device or "cpu")
        return Trained(row, fold, [net], [res.log], res.train_seconds + res.val_seconds, {"fit": res})

    def probabilities(self, trained, case, p: HNFNetv2Params, device=None) -> np.ndarray:
        net = trained.networks[0] if len(trained.networks) == 1 else trained.networks
        return predict(net, case, p, tta=1, post=False, device=device)[1]

    def to_labels(self, trained, probs, case, p: HNFNetv2Params, final=False) -> np.ndarray:
        return to_labels(probs, p, post=final)

    def network_inputs(self, trained, p: HNFNetv2Params):
        return [((4, *p.patch_size), int(np.prod(p.patch_size)))] * len(trained.networks)
