"""Futrega et al., "Optimized U-Net for Brain Tumor Segmentation" (BraTS 2021, NVIDIA):
the experiment pipeline of the paper, read top to bottom beside its Sections 2-3.

* Section 2.2 - input: each modality z-scored over its own non-zero voxels (background
  stays 0; :data:`NORMALISATION`) plus an optional one-hot foreground channel; augmentation :class:`~brats_lib.augmentation.NnUNetAugmentation`
  after a foreground-biased crop (p 0.4).
* Section 2.3 - networks: :mod:`brats_lib.papers.optimized_unet.networks` (U-Net rows),
  ``unetr``, ``segresnet_vae``.
* Section 2.4 - loss per region (WT, TC, ET), summed over the regions: batched sigmoid
  Dice + BCE (Focal, gamma 2, for the Focal row; :class:`~brats_lib.losses.RegionDicePlus`),
  deep supervision  L = L(y1, p1) + 1/2 L(y2, p2) + 1/4 L(y3, p3)  (eq. 1).
* Section 2.5 - inference: sliding window (patch size, overlap 0.5, Gaussian), 8 flips of
  the whole volume (``tta_mode="image"``), regions -> labels by the paper's nested rule
  (WT < 0.45 background, else TC < 0.4 ED, else ET < 0.45 NCR, else ET;
  ``label_rule="nested"``, :func:`brats_lib.labels.regions_to_labels`), the ET post-processing
  rule :func:`~.postprocess.remove_small_et`; thresholds and the voxel count
  chosen by grid search on the cross-validation predictions.
* Section 3.2 - Adam, weight decay 1e-4, linear warm-up then cosine annealing, k-fold
  cross-validation, the two best checkpoints per fold ensembled by averaging probabilities.
* Section 3.3 - the trained rows of Tables 1-4 (:data:`RUNS`) and the notebook's rows x folds
  loop (:func:`cross_validate_rows`); the paper's numbers, table rows and claims are in
  :mod:`~brats_lib.papers.optimized_unet.paper`, the notebook's tables and figures in
  :mod:`~brats_lib.papers.optimized_unet.report`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from brats_lib import labels as L
from brats_lib import losses, models
from brats_lib import pipeline as PL
from brats_lib.augmentation import DeviceBatch, DeviceNnUNetAugmentation, NnUNetAugmentation
from brats_lib.data import LoadedCase
from brats_lib.inference import predict_case, prepare_image, probabilities_to_labels, validation_fn
from brats_lib.metrics import dice
from brats_lib.sampling import PatchDataset
from brats_lib.io import load_weights
from brats_lib.training import FitResult, TrainConfig, fit
from .params import OptimizedUNetParams
from .postprocess import et_summary, remove_small_et
from brats_lib.pipeline import Pipeline, Trained, register

#: Section 2.5: WT, TC, ET probability thresholds of the submission
PAPER_THRESHOLDS = (0.45, 0.40, 0.45)
#: Section 2.1: "the mean and the standard deviation were computed within the non-zero
#: region for each channel separately"
NORMALISATION = "zscore_channel"
#: the ET post-processing rule of Section 2.5
PAPER_POSTPROCESS = dict(min_component=16, min_total=73, max_mean_prob=0.9)
#: deep-supervision weights of eq. (1): main head, then the two lower heads
DS_WEIGHTS = (1.0, 0.5, 0.25)


@dataclass(frozen=True)
class Run:
    """One trained configuration (a row of the ablation tables)."""

    model: str                 # registered name
    loss: str = "dice_bce"     # dice_bce | dice_focal
    onehot: bool = False       # fifth input channel

    @property
    def in_channels(self) -> int:
        return 5 if self.onehot else 4


#: every configuration the tables need; keys are the names the tables print
RUNS: dict[str, Run] = {
    "U-Net": Run("optimized_unet_baseline"),
    "UNETR": Run("unetr"),
    "SegResNetVAE": Run("segresnet_vae"),
    "Attention": Run("optimized_unet_attention"),
    "DS": Run("optimized_unet_ds"),
    "Residual": Run("optimized_unet_residual"),
    "DB": Run("optimized_unet_dropblock"),
    "Focal": Run("optimized_unet_baseline", loss="dice_focal"),
    "Deeper": Run("optimized_unet_deeper"),
    "Channels": Run("optimized_unet_channels"),
    "One-hot": Run("optimized_unet_onehot", onehot=True),
    "D+C+O": Run("optimized_unet", onehot=True),
}
#: the final model: its cross-validation probabilities feed the searches of Section 2.5
FINAL_ROW = "D+C+O"


# ------------------------------------------------------------------ networks and losses
def model_kwargs(run: Run, p: OptimizedUNetParams, paper_size: bool = False) -> dict:
    """Constructor arguments of ``run``'s network: from the parameters ``p`` (scaled for the
    ``cpu``/``test`` profiles) or, with ``paper_size``, the paper's own sizes at 128^3."""
    patch = [128, 128, 128] if paper_size else list(p.patch_size)
    if run.model == "unetr":
        if paper_size:
            return dict(in_channels=4, out_channels=3, img_size=patch)
        return dict(in_channels=4, out_channels=3, img_size=patch, feature_size=p.unetr_feature_size,
                    hidden_size=p.unetr_hidden_size, mlp_dim=p.unetr_mlp_dim, num_heads=p.unetr_heads)
    if run.model == "segresnet_vae":
        if paper_size:
            return dict(in_channels=4, out_channels=3, input_image_size=patch)
        return dict(in_channels=4, out_channels=3, input_image_size=patch, init_filters=p.segresnet_filters,
                    vae_nz=p.vae_nz)
    kw = dict(in_channels=run.in_channels, out_channels=3, ds_upsample=p.ds_upsample)
    if not paper_size:
        kw.update(base_filters=p.base_filters, wide_filters=p.wide_filters, drop_block_size=p.drop_block_size)
    return kw


def build_model(run: Run, p: OptimizedUNetParams, paper_size: bool = False) -> torch.nn.Module:
    """``run``'s network, built from the registry with :func:`model_kwargs`."""
    return models.build(run.model, **model_kwargs(run, p, paper_size))


def loss_function(run: Run, p: OptimizedUNetParams) -> torch.nn.Module:
    """Dice + BCE (or Focal) per region, summed over WT, TC, ET; deep supervision by eq. (1);
    SegResNetVAE adds ``vae_weight`` x its VAE loss."""
    region = losses.region_loss("dice_focal" if run.loss == "dice_focal" else "dice_bce", batch_dice=True)
    if run.model == "segresnet_vae":
        return losses.WithAuxiliaryLoss(region, p.vae_weight)
    return losses.DeepSupervision(region, DS_WEIGHTS, normalise=p.ds_upsample)


# ------------------------------------------------------------------ data
def network_input(lc: LoadedCase, onehot: bool, p: OptimizedUNetParams) -> tuple[np.ndarray, np.ndarray | None]:
    """(input (4 or 5, h, w, d), label cropped alike): crop to the brain, z-score inside it
    (background stays 0), append the one-hot foreground channel when asked."""
    x, box = prepare_image(lc.image, NORMALISATION, p.onehot_mode if onehot else None)
    return x, (lc.label[box.slices] if lc.label is not None else None)


def patch_dataset(cases: Sequence[LoadedCase], run: Run, p: OptimizedUNetParams, seed: int) -> PatchDataset:
    """Random patches; augmented here, per patch, unless ``p.device_augment`` moves the
    augmentation to the training device (:func:`device_augmentation`)."""
    arrays = [network_input(lc, run.onehot, p) for lc in cases]
    aug = NnUNetAugmentation(mri_channels=4) if p.augment and not p.device_augment else None
    return PatchDataset(arrays, p.patch_size, p.steps_per_epoch * p.batch_size, fg_prob=p.fg_prob,
                        target="label_map" if p.device_augment else "regions", transform=aug, seed=seed,
                        passes=p.epoch_pass)


def device_augmentation(p: OptimizedUNetParams, seed: int) -> DeviceBatch | None:
    """What ``p.device_augment`` moves to the training device (see :class:`DeviceBatch`)."""
    if not p.device_augment:
        return None
    return DeviceBatch(DeviceNnUNetAugmentation(mri_channels=4, seed=seed) if p.augment else None)


def predict(model, lc: LoadedCase, run: Run, p: OptimizedUNetParams, tta=None, thresholds=(0.5, 0.5, 0.5), device=None):
    """(labels, probabilities (3, H, W, D)) of one case: sliding window at the patch size,
    overlap 0.5, Gaussian weights; ``model`` may be a list (an ensemble)."""
    return predict_case(model, lc.image, p.patch_size, "sigmoid", thresholds, p.overlap, "gaussian", tta,
                        NORMALISATION, p.onehot_mode if run.onehot else None, device=device,
                        amp=p.amp, label_rule=p.label_rule, tta_mode=p.tta_mode)


def validation(cases: Sequence[LoadedCase], run: Run, p: OptimizedUNetParams, device=None):
    """``val_fn`` for :func:`~brats_lib.training.fit`: mean Dice per region over whole
    validation cases (no TTA, thresholds 0.5, as the paper's per-epoch evaluation)."""

    return validation_fn(cases, p.patch_size, "sigmoid", (0.5, 0.5, 0.5), p.overlap, None, NORMALISATION,
                         p.onehot_mode if run.onehot else None, device=device,
                         amp=p.amp, label_rule=p.label_rule)


# ------------------------------------------------------------------ training
def train_config(p: OptimizedUNetParams, lr: float, run: Run | None = None) -> TrainConfig:
    """Section 3.2: Adam, weight decay, linear warm-up over ``warmup_steps`` then cosine.
    ``p.channels_last`` applies to the convolutional U-Nets only (MONAI's SegResNetVAE and
    UNETR reshape with ``view``, which needs the default layout)."""
    conv = run is None or run.model.startswith("optimized_unet")
    return TrainConfig(epochs=p.epochs, batch_size=p.batch_size, optimizer="adam", lr=lr,
                       weight_decay=p.weight_decay, schedule="cosine",
                       warmup_epochs=p.warmup_steps / p.steps_per_epoch, best_metric="dice_mean",
                       val_every=p.val_every,
                       keep_best=p.keep_best, amp=p.amp, num_workers=p.num_workers, seed=p.seed,
                       progress=p.progress, channels_last=p.channels_last and conv, compile=p.compile)


def train_fold(name: str, fold: int, train: Sequence[LoadedCase], val: Sequence[LoadedCase], p: OptimizedUNetParams,
               out_dir: str | Path, device=None) -> tuple[FitResult, float]:
    """Train row ``name`` on one fold for every learning rate of ``p.learning_rates``; return
    the run with the highest best validation Dice and its learning rate (Section 3.2 ran
    each experiment with three rates)."""
    run = RUNS[name]
    best: tuple[FitResult, float] | None = None
    for lr in p.learning_rates:
        torch.manual_seed(p.seed + fold)
        model = build_model(run, p)
        res = fit(model, loss_function(run, p), patch_dataset(train, run, p, seed=p.seed + 1000 * fold),
                  train_config(p, lr, run), Path(out_dir) / f"lr{lr:g}", val_fn=validation(val, run, p, device),
                  device=device, batch_transform=device_augmentation(p, seed=p.seed + 1000 * fold))
        if best is None or res.best[0][0] > best[0].best[0][0]:
            best = (res, lr)
    return best


def load_ensemble(res: FitResult, run: Run, p: OptimizedUNetParams) -> list[torch.nn.Module]:
    """The stored best checkpoints of a fold (the two best epochs), ready to average."""
    out = []
    for path in res.best_checkpoints:
        out.append(load_weights(build_model(run, p), path).eval())
    return out


# ------------------------------------------------------------------ evaluation and searches
def region_dice(labels: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Dice of each region (ET, TC, WT) of canonical ``labels`` against ``ref``."""
    return {r: dice(L.region_mask(labels, r), L.region_mask(ref, r)) for r in L.REGIONS}


def to_labels(prob: np.ndarray, thresholds: Sequence[float], p: OptimizedUNetParams) -> np.ndarray:
    """Region probabilities (WT, TC, ET) -> labels with ``thresholds`` and the profile's rule."""
    return probabilities_to_labels(prob, "sigmoid", thresholds, p.label_rule)


def final_labels(prob: np.ndarray, p: OptimizedUNetParams) -> np.ndarray:
    """The submitted rule (Section 2.5): labels at :data:`PAPER_THRESHOLDS`, then the ET
    post-processing :func:`~.postprocess.remove_small_et` with :data:`PAPER_POSTPROCESS`."""
    return remove_small_et(to_labels(prob, PAPER_THRESHOLDS, p), prob, **PAPER_POSTPROCESS)


def threshold_grid(probs: Sequence[np.ndarray], refs: Sequence[np.ndarray], grid: Sequence[float],
                   base: Sequence[float] = PAPER_THRESHOLDS, label_rule: str = "nested") -> pd.DataFrame:
    """Mean Dice of each region (rows ET, TC, WT) when its own threshold takes each value of
    ``grid`` (columns) and the others stay at ``base`` (WT, TC, ET order).

    Labels are nested (TC inside WT, ET inside TC), so a region's Dice depends on its own
    threshold and those of the regions containing it; one region is varied at a time.
    """
    out = pd.DataFrame(index=list(L.REGIONS), columns=[f"{t:.2f}" for t in grid], dtype=float)
    for ch, region in enumerate(L.REGION_CHANNELS):
        for t in grid:
            thr = list(base)
            thr[ch] = float(t)
            scores = [dice(L.region_mask(probabilities_to_labels(pr, "sigmoid", thr, label_rule), region),
                           L.region_mask(ref, region)) for pr, ref in zip(probs, refs)]
            out.loc[region, f"{t:.2f}"] = float(np.mean(scores))
    return out


def best_thresholds(grid_table: pd.DataFrame) -> tuple[float, float, float]:
    """WT, TC, ET thresholds maximising each region's mean Dice in a :func:`threshold_grid` table
    (the smallest threshold among ties)."""
    return tuple(float(grid_table.loc[r].astype(float).idxmax()) for r in L.REGION_CHANNELS)


def min_total_search(labels: Sequence[np.ndarray], probs: Sequence[np.ndarray], refs: Sequence[np.ndarray],
                     counts: Sequence[int], min_component: int = 16, max_mean_prob: float = 0.9) -> pd.DataFrame:
    """Mean ET Dice after the post-processing rule for each ``min_total`` in ``counts``
    (rule 1 with ``min_component`` first). Rule 2 either removes all ET of a case or keeps it,
    so each case's two outcomes are scored once."""
    rows = []
    per_case = []
    for lab, pr, ref in zip(labels, probs, refs):
        step1 = remove_small_et(lab, pr, min_component, 0, max_mean_prob)
        n, mean_p = et_summary(step1, pr)
        ref_et = L.region_mask(ref, "ET")
        keep = dice(step1 == L.ET, ref_et)
        drop = dice(np.zeros_like(ref_et), ref_et)
        per_case.append((n, mean_p, keep, drop))
    for k in counts:
        scores = [drop if (0 < n < k and m < max_mean_prob) else keep for n, m, keep, drop in per_case]
        rows.append({"min_total": int(k), "ET Dice": float(np.mean(scores))})
    return pd.DataFrame(rows).set_index("min_total")


def export_predictor(path: str | Path, nets: Sequence[torch.nn.Module], run: Run, p: OptimizedUNetParams,
                     thresholds: Sequence[float] = PAPER_THRESHOLDS, postprocess_kwargs: dict | None = None) -> Path:
    """Write ``nets`` (a fold's ensemble) with the paper's inference settings as a predictor
    file for ``python -m brats_lib predict``."""
    from brats_lib.inference import save_predictor

    return save_predictor(path, nets, run.model, model_kwargs(run, p), p.patch_size, "sigmoid", thresholds,
                          p.overlap, p.tta, NORMALISATION, p.onehot_mode if run.onehot else None, "optimized_unet",
                          dict(PAPER_POSTPROCESS if postprocess_kwargs is None else postprocess_kwargs),
                          label_rule=p.label_rule, tta_mode=p.tta_mode, amp=p.amp)


# ------------------------------------------------------------------ the common interface
@register
class OptimizedUNetPipeline(Pipeline):
    """:class:`~brats_lib.pipeline.Pipeline` of the Optimized U-Net: a row's networks are its
    best checkpoints (``keep_best``) of the learning rate with the best validation Dice;
    the tables' rule is thresholds 0.5, the submitted (``final``) one the paper's thresholds
    and the ET post-processing (Section 2.5)."""

    notebook = "optimized_unet"
    training_text = "{epochs} x {steps_per_epoch} steps, lr {learning_rates}"
    rows = RUNS

    def train_fold(self, row, fold, train, val, p: OptimizedUNetParams, out_dir, device=None) -> Trained:
        res, lr = train_fold(row, fold, train, val, p, out_dir, device)
        nets = [m.to(device or "cpu").eval() for m in load_ensemble(res, RUNS[row], p)]
        return Trained(row, fold, nets, [res.log], res.train_seconds + res.val_seconds, {"fit": res, "lr": lr})

    def probabilities(self, trained, case, p: OptimizedUNetParams, device=None) -> np.ndarray:
        return predict(trained.networks, case, RUNS[trained.row], p, tta=1, device=device)[1]

    def to_labels(self, trained, probs, case, p: OptimizedUNetParams, final=False) -> np.ndarray:
        if final:
            return final_labels(probs, p)
        return to_labels(probs, (0.5, 0.5, 0.5), p)

    def network_inputs(self, trained, p: OptimizedUNetParams):
        return [((RUNS[trained.row].in_channels, *p.patch_size), int(np.prod(p.patch_size)))] * len(trained.networks)


# ------------------------------------------------------------------ the notebook's rows x folds loop
@dataclass
class CrossValidation:
    """What :func:`cross_validate_rows` keeps: the per-case scores of every row, each
    (row, fold)'s :class:`~brats_lib.pipeline.Trained` (its ensemble of best checkpoints,
    ``state["fit"]`` the training run), and the final row's out-of-fold probabilities
    (case id -> (probabilities (3, H, W, D), reference labels, fold))."""

    per_case: pd.DataFrame
    trained: dict[tuple[str, int], Trained]
    oof: dict[str, tuple[np.ndarray, np.ndarray, int]]

    @property
    def best_scores(self) -> dict[tuple[str, int], float]:
        """(row, fold) -> the fold's score in Tables 1-3: its highest validation mean Dice."""
        return {key: float(t.state["fit"].best[0][0]) for key, t in self.trained.items()}

    def seconds(self, part: str = "train_seconds") -> float:
        """Summed ``train_seconds`` (or ``val_seconds``) of every training run."""
        return float(sum(getattr(t.state["fit"], part) for t in self.trained.values()))


def row_tta(row: str, p: OptimizedUNetParams) -> int:
    """Flips of a row's per-case evaluation: the profile's ``tta`` for the final model,
    ``tta_ablation`` for the ablation rows."""
    return p.tta if row == FINAL_ROW else p.tta_ablation


def cross_validate_rows(rows: Sequence[str], folds: Sequence[Mapping[str, Sequence[str]]],
                        cases: Mapping[str, LoadedCase], p: OptimizedUNetParams, out_dir: str | Path,
                        device: torch.device | str | None = None, progress: bool = True) -> CrossValidation:
    """Train every row on every fold (:meth:`OptimizedUNetPipeline.train_fold`: each learning
    rate, the best kept, its best checkpoints ensembled) and segment the fold's validation
    cases with the ensemble (thresholds 0.5, :func:`row_tta` flips, sliding-window TTA of
    ``p.tta_mode``), scoring each case. Checkpoints go to ``out_dir/<row>/fold<k>``.

    Not :func:`brats_lib.pipeline.cross_validate`: that one flips the raw volume around
    :meth:`~brats_lib.pipeline.Pipeline.probabilities` (the comparison's common form); here
    the flips are those of the paper's inference (:func:`predict`), as the tables report."""
    from tqdm.auto import tqdm

    pipeline = PL.get(OptimizedUNetPipeline.notebook)
    trained: dict[tuple[str, int], Trained] = {}
    table, oof = [], {}
    bar = tqdm([(row, k) for row in rows for k in range(len(folds))], desc="rows x folds", disable=not progress)
    for row, k in bar:
        bar.set_postfix(row=row, fold=k)
        val = [cases[c] for c in folds[k]["val"]]
        res = PL.train(pipeline, row, k, [cases[c] for c in folds[k]["train"]], val, p,
                       Path(out_dir) / PL.safe_name(row) / f"fold{k}", device, trained)
        for lc in val:
            labels, prob = predict(res.networks, lc, RUNS[row], p, tta=row_tta(row, p), device=device)
            if row == FINAL_ROW:
                oof[lc.case_id] = (prob, lc.label, k)
            table.append({"row": row, "fold": k, "case": lc.case_id,
                          **pipeline.score(PL.Prediction(labels, prob), lc)})
    return CrossValidation(PL.with_dice_mean(pd.DataFrame(table)), trained, oof)
