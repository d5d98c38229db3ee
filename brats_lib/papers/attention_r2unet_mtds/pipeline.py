"""Ma, Tang and Guo, "Multi-Task Deep Supervision on Attention R2U-Net for Brain Tumor
Segmentation" (Frontiers in Oncology 2021): the experiment pipeline, read top to bottom
beside Sections 2-3 of the paper. The paper's numeric tables and equations were lost in
our copy; ``notebooks/papers.md`` rebuilds the equations from the prose.

* Section 2 - networks: :mod:`brats_lib.papers.attention_r2unet_mtds.networks`.
* Section 3.1.2 - every axial slice centre-cropped to 144 x 176; min-max normalisation
  per modality over the case's brain (0 outside).
* Section 3.1.3 - flips (:class:`~brats_lib.augmentation.FlipAugmentation`).
* Section 3.2, Eq. 9 - per output: cross-entropy + (1 - Dice), the Dice with squared
  terms in its denominator; MTDS: the main output against WT, the heads against ET,
  NCR/NET and ED (single-task DS: WT on every head), summed (Eq. 1).
* Section 3.3 - Adam, lr 1e-4 decayed as Myronenko, lr0 (1 - e / E)^0.9; batch 32; 50 epochs.
* Section 3.4 - the slices of a case stacked into 3D; the largest tumour component kept
  and every other one smaller than a tenth of it removed.
* Section 3.5 - DSC, sensitivity, specificity, HD95 for WT and each sub-region.
* Tables 1, 3, 4, 6 - the trained rows (:data:`RUNS`); the tables' rows and the paper's
  qualitative claims are in :mod:`~brats_lib.papers.attention_r2unet_mtds.paper`.
* :func:`cross_validate_rows` - every row on every fold, scored on the masks of Section 3.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from monai.losses import DiceCELoss
from scipy import ndimage
from tqdm.auto import tqdm

from brats_lib import labels as L
from brats_lib import models
from brats_lib import preprocess as P
from brats_lib.augmentation import FlipAugmentation
from brats_lib.data import LoadedCase
from brats_lib.metrics import binary_metrics
from brats_lib.sampling import SliceDataset, center_crop_2d
from brats_lib.precision import autocast
from brats_lib.io import load_weights
from brats_lib.training import FitResult, TrainConfig, fit
from brats_lib.inference import flip_average
from brats_lib.pipeline import Pipeline, Prediction, Trained, get, register

from .paper import PROPOSED
from .params import AttentionR2UNetParams

#: output channels in the order the networks give them: main head, then the three heads
OUTPUTS = ("WT", "ET", "NCR", "ED")
#: the regions scored (Section 3.5): the whole tumour and each sub-region
SCORED = ("WT", "ET", "NCR", "ED")
METRICS = ("Dice", "Sensitivity", "Specificity", "HD95")


@dataclass(frozen=True)
class Run:
    """One trained configuration: a registered network and its supervision."""

    model: str
    supervision: str = "multi"   # multi (MTDS) | single (WT on every head) | none

    @property
    def heads(self) -> bool:
        """Whether the network has auxiliary heads (deep supervision)."""
        return self.supervision != "none"



#: every trained configuration (the rows of Tables 1, 3, 4 and 6: :data:`~.paper.TABLES`)
RUNS: dict[str, Run] = {
    PROPOSED: Run("mtds_attention_r2unet", "multi"),
    "SE without dropout": Run("attention_r2unet_se_nodropout", "multi"),
    "No shortcut, no AGs": Run("attention_r2unet_plain", "none"),
    "Shortcut, no AGs": Run("attention_r2unet_residual", "none"),
    "Shortcut + AGs on skips (Attention U-Net)": Run("attention_r2unet_skip_gates", "none"),
    "APR (no DS)": Run("attention_r2unet_apr", "none"),
    "Single-task DS (WT on every head)": Run("mtds_attention_r2unet", "single"),
    "U-Net (MONAI)": Run("unet2d", "none"),
    "Attention U-Net (MONAI)": Run("attention_unet2d", "none"),
    "UNet++ (MONAI)": Run("unetplusplus2d", "none"),
    "SegResNet (MONAI)": Run("segresnet2d", "none"),
}

# ------------------------------------------------------------------ networks and loss
def build_model(run: Run, p: AttentionR2UNetParams) -> nn.Module:
    """The network of ``run`` at this run's width (``p.base``) and SE dropout."""
    return models.build(run.model, in_channels=4, base=p.base, se_dropout=p.se_dropout)


def head_targets(label: torch.Tensor, supervision: str) -> list[torch.Tensor]:
    """Binary (B, 1, H, W) targets of each output from canonical labels (B, H, W): WT for the
    main output, then ET, NCR/NET, ED (MTDS) or WT again (single-task DS)."""
    wt = (label > 0).float()[:, None]
    if supervision == "none":
        return [wt]
    if supervision == "single":
        return [wt, wt, wt, wt]
    return [wt] + [(label == c).float()[:, None] for c in (L.ET, L.NCR, L.ED)]


class MTDSLoss(nn.Module):
    """Eq. 1 with Eq. 9 for every output: sum over outputs of BCE + (1 - Dice), Dice with
    squared terms in the denominator (MONAI ``DiceCELoss(squared_pred=True)``)."""

    def __init__(self, supervision: str = "multi"):
        super().__init__()
        if supervision not in ("multi", "single", "none"):
            raise ValueError(f"supervision must be 'multi', 'single' or 'none', got {supervision!r}")
        self.supervision = supervision
        self.loss = DiceCELoss(sigmoid=True, squared_pred=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)

    def forward(self, outputs, label: torch.Tensor) -> torch.Tensor:
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        targets = head_targets(label, self.supervision if len(outputs) > 1 else "none")
        return sum(self.loss(o, t) for o, t in zip(outputs, targets))


# ------------------------------------------------------------------ data
def network_input(lc: LoadedCase) -> tuple[np.ndarray, np.ndarray | None]:
    """(image (4, H, W, D), label): min-max per modality over the case's brain, 0 outside."""
    return P.minmax(lc.image), lc.label


def slice_dataset(cases: Sequence[LoadedCase], p: AttentionR2UNetParams, seed: int) -> SliceDataset:
    """Every brain slice of ``cases``, centre-cropped to ``p.crop``, flipped at random; targets
    are canonical label slices (the loss derives each head's mask)."""
    return SliceDataset([network_input(lc) for lc in cases], p.crop, only_brain=True, target="labels",
                        transform=FlipAugmentation() if p.augment else None, seed=seed)


# ------------------------------------------------------------------ training
def train_config(p: AttentionR2UNetParams) -> TrainConfig:
    """Section 3.3: Adam, lr0 (1 - e / E)^0.9 (Myronenko's decay), no warm-up."""
    return TrainConfig(epochs=p.epochs, batch_size=p.batch_size, optimizer="adam", lr=p.lr, schedule="poly",
                       poly_power=0.9, amp=p.amp, num_workers=p.num_workers, seed=p.seed, progress=p.progress)


def train(name: str, fold: int, train_cases: Sequence[LoadedCase], p: AttentionR2UNetParams, out_dir: str | Path, device=None) -> FitResult:
    """Train row ``name`` on one fold; the last epoch's weights are the fold's model."""
    run = RUNS[name]
    torch.manual_seed(p.seed + fold)
    return fit(build_model(run, p), MTDSLoss(run.supervision), slice_dataset(train_cases, p, p.seed + 1000 * fold),
               train_config(p), out_dir, device=device)


def load_final(res: FitResult, name: str, p: AttentionR2UNetParams) -> nn.Module:
    """Row ``name``'s network with the last epoch's weights of ``res``, in eval mode."""
    return load_weights(build_model(RUNS[name], p), Path(res.out_dir) / "last.pt").eval()


# ------------------------------------------------------------------ inference and post-processing
@torch.no_grad()
def predict_case(model: nn.Module, lc: LoadedCase, p: AttentionR2UNetParams, device=None, batch: int = 64) -> np.ndarray:
    """Probabilities (4, H, W, D) of WT, ET, NCR/NET, ED for one raw case: every axial slice
    centre-cropped, segmented, put back (0 outside the crop) and stacked in 3D. Networks
    without heads give WT only (the other channels are NaN)."""
    x, _ = network_input(lc)
    h, w, d = x.shape[1:]
    model.eval()
    dev = device or next(model.parameters()).device
    slices = np.stack([center_crop_2d(x[..., z], p.crop) for z in range(d)])       # (D, 4, ch, cw)
    probs = []
    for i in range(0, d, batch):
        t = torch.from_numpy(np.ascontiguousarray(slices[i:i + batch])).to(dev)
        with autocast(dev.type, p.amp):
            out = model.all_outputs(t) if hasattr(model, "all_outputs") and model.deep_supervision else model(t)
        probs.append(torch.sigmoid(out.float()).cpu().numpy())
    probs = np.concatenate(probs)                                                 # (D, k, ch, cw)
    full = np.full((len(OUTPUTS), h, w, d), np.nan, np.float32)
    full[: probs.shape[1]] = 0.0
    ch, cw = p.crop
    top, left = (h - ch) // 2, (w - cw) // 2
    sy = slice(max(top, 0), max(top, 0) + min(ch, h))
    sx = slice(max(left, 0), max(left, 0) + min(cw, w))
    inner = probs[:, :, max(-top, 0): max(-top, 0) + min(ch, h), max(-left, 0): max(-left, 0) + min(cw, w)]
    full[: probs.shape[1], sy, sx, :] = np.moveaxis(inner, 0, -1)
    return full


def keep_large_components(mask: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Section 3.4: keep the largest 3D connected component (26-connectivity) and every
    other one whose volume is at least ``fraction`` of it."""
    comp, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(comp.ravel())[1:]
    keep = np.concatenate([[False], sizes >= fraction * sizes.max()])
    return keep[comp]


def masks_from_probabilities(probs: np.ndarray, post: bool = True, fraction: float = 0.1,
                              sub_regions: bool = True) -> dict[str, np.ndarray]:
    """Binary masks per scored region at threshold 0.5: WT (post-processed if ``post``) and,
    where the network has heads trained on them (``sub_regions``: MTDS, not single-task DS),
    ET / NCR / ED restricted to the WT mask."""
    wt = probs[0] > 0.5
    if post:
        wt = keep_large_components(wt, fraction)
    out = {"WT": wt}
    if sub_regions and not np.isnan(probs[1]).all():
        for k, region in enumerate(OUTPUTS[1:], start=1):
            out[region] = (probs[k] > 0.5) & wt
    return out


def labels_from_masks(masks: dict[str, np.ndarray]) -> np.ndarray:
    """Canonical labels from :func:`masks_from_probabilities`' masks: ED inside WT, then
    NCR/NET and ET where the heads predict them (WT alone gives ED only)."""
    lab = np.zeros(masks["WT"].shape, np.uint8)
    lab[masks["WT"]] = L.ED
    for region, value in (("NCR", L.NCR), ("ET", L.ET)):
        if region in masks:
            lab[masks[region]] = value
    return lab


def reference_masks(label: np.ndarray) -> dict[str, np.ndarray]:
    """The reference's binary masks per scored region, from canonical labels."""
    return {"WT": label > 0, "ET": label == L.ET, "NCR": label == L.NCR, "ED": label == L.ED}


def score_case(masks: dict[str, np.ndarray], label: np.ndarray, spacing=None) -> dict[str, float]:
    """DSC, sensitivity, specificity, HD95 of every region the prediction has (NaN otherwise),
    and the voxel counts ``pred voxels R`` / ``ref voxels R`` of every region."""
    ref = reference_masks(label)
    row = {}
    for region in SCORED:
        m = binary_metrics(masks[region], ref[region], spacing) if region in masks else None
        for met in METRICS:
            row[f"{met} {region}"] = m[met] if m is not None else float("nan")
    for region in SCORED:  # where the empty-region rules decide a score (brats_lib.claims)
        row[f"pred voxels {region}"] = int(np.count_nonzero(masks[region])) if region in masks else float("nan")
        row[f"ref voxels {region}"] = int(np.count_nonzero(ref[region]))
    return row


# ------------------------------------------------------------------ the common interface
@dataclass
class MaskPrediction(Prediction):
    """A :class:`~brats_lib.pipeline.Prediction` with the binary masks the paper scores
    (Section 3.5): WT, and ET / NCR / ED for rows whose heads are trained on them (MTDS)."""

    masks: dict[str, np.ndarray] = field(default_factory=dict)


@register
class AttentionR2UNetPipeline(Pipeline):
    """:class:`~brats_lib.pipeline.Pipeline` of the 2D attention R2U-Net with MTDS: slices
    segmented and stacked in 3D (:func:`predict_case`), each head's mask at 0.5, labels
    nested from the WT / TC-like heads (:func:`labels_from_masks`); the submitted (``final``)
    rule adds the 3D post-processing of Section 3.4. Predictions carry their masks
    (:class:`MaskPrediction`) and are scored on them (:func:`score_case`)."""

    notebook = "attention_r2unet_mtds"
    rows = RUNS
    training_text = "{epochs} epochs of slices"

    def train_fold(self, row, fold, train_cases, val_cases, p: AttentionR2UNetParams, out_dir, device=None) -> Trained:
        res = train(row, fold, train_cases, p, out_dir, device)  # no validation: the last epoch is kept
        net = load_final(res, row, p).to(device or "cpu")
        return Trained(row, fold, [net], [res.log], res.train_seconds + res.val_seconds, {"fit": res})

    def probabilities(self, trained, case, p: AttentionR2UNetParams, device=None) -> np.ndarray:
        return predict_case(trained.networks[0], case, p, device)

    def to_labels(self, trained, probs, case, p: AttentionR2UNetParams, final=False) -> np.ndarray:
        return labels_from_masks(masks_from_probabilities(probs, final, p.post_fraction))

    def predict(self, trained, case, p: AttentionR2UNetParams, tta=1, final=False, device=None) -> MaskPrediction:
        """The labels of :meth:`to_labels` (``tta`` whole-volume flips averaged first), and
        the scored masks: the sub-regions only where the row's heads learnt them (MTDS)."""
        probs = flip_average(lambda c: self.probabilities(trained, c, p, device), case, tta)
        masks = masks_from_probabilities(probs, final, p.post_fraction)
        scored = masks if RUNS[trained.row].supervision == "multi" else {"WT": masks["WT"]}
        return MaskPrediction(labels_from_masks(masks), probs, scored)

    def score(self, prediction: MaskPrediction, case) -> dict[str, float]:
        """Section 3.5: DSC, sensitivity, specificity, HD95 of every scored mask (:func:`score_case`)."""
        return score_case(prediction.masks, case.label, case.spacing)

    def network_inputs(self, trained, p: AttentionR2UNetParams):
        return [((4, *p.crop), int(np.prod(p.crop)))]


def cross_validate_rows(rows: Sequence[str], folds: Sequence[Mapping[str, Sequence[str]]],
                        cases: Mapping[str, LoadedCase], p: AttentionR2UNetParams, runs_dir: str | Path, device=None,
                        progress: bool = True) -> tuple[pd.DataFrame, dict[tuple[str, int], Trained]]:
    """Train every row (a key of :data:`RUNS`) on every fold, keep its last epoch, and score
    it on the fold's validation cases: slices segmented, stacked in 3D, post-processed
    (``final``), every mask scored (:meth:`AttentionR2UNetPipeline.score`).

    :func:`brats_lib.pipeline.cross_validate` with this paper's per-case table: the mask
    scores of Section 3.5 (WT, ET, NCR, ED), no ``Dice mean`` of the BraTS regions.
    Checkpoints go to ``runs_dir/<network>/<supervision>/fold<k>``. Returns the per-case
    table (row, fold, case, scores) and ``{(row, fold): Trained}``."""
    pipe = get(AttentionR2UNetPipeline.notebook)
    trained, table = {}, []
    bar = tqdm([(r, k) for r in rows for k in range(len(folds))], desc="rows x folds", disable=not progress)
    for row, k in bar:
        bar.set_postfix(row=row[:20], fold=k)
        run, val = RUNS[row], [cases[c] for c in folds[k]["val"]]
        res = pipe.train_fold(row, k, [cases[c] for c in folds[k]["train"]], val, p,
                              Path(runs_dir) / run.model / run.supervision / f"fold{k}", device)
        trained[row, k] = res
        for lc in val:
            pred = pipe.predict(res, lc, p, final=True, device=device)
            table.append({"row": row, "fold": k, "case": lc.case_id, **pipe.score(pred, lc)})
    return pd.DataFrame(table), trained
