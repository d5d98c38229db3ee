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
* Tables 1, 3, 4, 6 - the rows (:data:`TABLES`) and the paper's qualitative claims
  (:data:`CLAIMS`: its numbers were lost).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from monai.losses import DiceCELoss
from scipy import ndimage

from brats_lib import labels as L
from brats_lib import models
from brats_lib import preprocess as P
from brats_lib.augmentation import FlipAugmentation
from brats_lib.claims import Claim
from brats_lib.data import LoadedCase
from brats_lib.metrics import binary_metrics
from brats_lib.sampling import SliceDataset, center_crop_2d
from brats_lib.precision import autocast
from brats_lib.training import FitResult, TrainConfig, fit, load_weights
from brats_lib.pipeline import Pipeline, Trained, register

#: Section 3.1.2: the centre crop of every 240 x 240 axial slice
PAPER_CROP = (144, 176)
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
        return self.supervision != "none"


RUNS: dict[str, Run] = {
    "Proposed (APR + SE-dropout + MTDS)": Run("mtds_attention_r2unet", "multi"),
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
PROPOSED = "Proposed (APR + SE-dropout + MTDS)"

#: table -> [(row label, key of RUNS)]; the paper's proposed row is compared against the others
TABLES: dict[str, list[tuple[str, str]]] = {
    "table1": [("SE without dropout", "SE without dropout"), ("SE with dropout", PROPOSED)],
    "table3": [("no shortcut, no AGs", "No shortcut, no AGs"), ("shortcut, no AGs", "Shortcut, no AGs"),
               ("shortcut + AGs on skips", "Shortcut + AGs on skips (Attention U-Net)"), ("APR", "APR (no DS)")],
    "table4": [("no deep supervision", "APR (no DS)"), ("single-task DS", "Single-task DS (WT on every head)"),
               ("MTDS", PROPOSED)],
    "table6": [("U-Net", "U-Net (MONAI)"), ("Attention U-Net", "Attention U-Net (MONAI)"),
               ("UNet++", "UNet++ (MONAI)"), ("SegResNet", "SegResNet (MONAI)"), ("Ours", PROPOSED)],
}
TABLE_TITLES = {
    "table1": "Table 1: SE module with or without dropout",
    "table3": "Table 3: the APR module (without MTDS)",
    "table4": "Table 4: deep supervision",
    "table6": "Table 6: retrained comparison models",
}
_KEYS = {table: dict(rows) for table, rows in TABLES.items()}  # table -> {row label: key of RUNS}


def _first(table: str, label: str, metrics: Sequence[str], text: str, source: str) -> list[Claim]:
    """``label`` is first among the rows of ``table`` in each of ``metrics``."""
    among = tuple(_KEYS[table].values())
    return [Claim(text.format(metric=m), _KEYS[table][label], None, m, kind="first", among=among, source=source)
            for m in metrics]


#: the paper's claims per table (its numbers were lost, the text says which row wins), on
#: the whole tumour, as Sections 2.1, 3.6 and 3.7 say; rows are the per-case "row" keys (RUNS)
CLAIMS: list[Claim] = [
    Claim("dropout in the SE module improves the results", _KEYS["table1"]["SE with dropout"],
          _KEYS["table1"]["SE without dropout"], "Dice WT", source="Sec. 2.1, Table 1"),
    *_first("table3", "APR", ("Dice WT", "Sensitivity WT", "HD95 WT"),
            "APR is first in {metric}", "Sec. 3.6.1, Table 3"),
    *_first("table4", "MTDS", ("Dice WT", "Sensitivity WT", "Specificity WT", "HD95 WT"),
            "MTDS is first in every metric: {metric}", "Sec. 3.6.2, Table 4"),
    *[Claim("no deep supervision beats single-task DS", _KEYS["table4"]["no deep supervision"],
            _KEYS["table4"]["single-task DS"], m, source="Sec. 3.6.2, Table 4")
      for m in ("Dice WT", "Sensitivity WT", "HD95 WT")],
    *_first("table6", "Ours", ("Dice WT", "Sensitivity WT", "Specificity WT", "HD95 WT"),
            "ours is first in {metric}", "Sec. 3.7, Table 6"),
    Claim("ours has the fewest parameters", _KEYS["table6"]["Ours"], None, "params (M)", kind="smallest",
          among=tuple(_KEYS["table6"].values()), source="Sec. 3.7, Table 6"),
]


# ------------------------------------------------------------------ networks and loss
def build_model(run: Run, p) -> nn.Module:
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


def slice_dataset(cases: Sequence[LoadedCase], p, seed: int) -> SliceDataset:
    """Every brain slice of ``cases``, centre-cropped to ``p.crop``, flipped at random; targets
    are canonical label slices (the loss derives each head's mask)."""
    return SliceDataset([network_input(lc) for lc in cases], p.crop, only_brain=True, target="labels",
                        transform=FlipAugmentation() if p.augment else None, seed=seed)


# ------------------------------------------------------------------ training
def train_config(p) -> TrainConfig:
    """Section 3.3: Adam, lr0 (1 - e / E)^0.9 (Myronenko's decay), no warm-up."""
    return TrainConfig(epochs=p.epochs, batch_size=p.batch_size, optimizer="adam", lr=p.lr, schedule="poly",
                       poly_power=0.9, amp=p.amp, num_workers=p.num_workers, seed=p.seed, progress=p.progress)


def train(name: str, fold: int, train_cases: Sequence[LoadedCase], p, out_dir: str | Path, device=None) -> FitResult:
    """Train row ``name`` on one fold; the last epoch's weights are the fold's model."""
    run = RUNS[name]
    torch.manual_seed(p.seed + fold)
    return fit(build_model(run, p), MTDSLoss(run.supervision), slice_dataset(train_cases, p, p.seed + 1000 * fold),
               train_config(p), out_dir, device=device)


def load_final(res: FitResult, name: str, p) -> nn.Module:
    return load_weights(build_model(RUNS[name], p), Path(res.out_dir) / "last.pt").eval()


# ------------------------------------------------------------------ inference and post-processing
@torch.no_grad()
def predict_case(model: nn.Module, lc: LoadedCase, p, device=None, batch: int = 64) -> np.ndarray:
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


def summary(per_case: pd.DataFrame, rows: Sequence[tuple[str, str]], base: str, params_m: dict[str, float],
            digits: int = 3) -> pd.DataFrame:
    """One table: per row, the mean [95 % CI] of each metric for WT and the sub-regions, the
    parameters, and the Wilcoxon p-value of the per-case WT Dice against ``base``."""
    from brats_lib.statistics import format_ci, paired_test

    ref = per_case[per_case.row == base].set_index("case")["Dice WT"]
    out = {}
    for label, key in rows:
        d = per_case[per_case.row == key].set_index("case")
        row = {}
        for region in SCORED:
            for met in METRICS:
                col = f"{met} {region}"
                if d[col].notna().any():
                    row[col] = format_ci(d[col], digits=1 if met == "HD95" else digits)
        row["params (M)"] = f"{params_m[key]:.3f}"
        row[f"p vs {dict((k, l) for l, k in rows)[base]}"] = "" if key == base else \
            f"{paired_test(d['Dice WT'], ref.reindex(d.index)):.3g}"
        out[label] = row
    return pd.DataFrame(out).T.fillna("")


# ------------------------------------------------------------------ the common interface
@register
class AttentionR2UNetPipeline(Pipeline):
    """:class:`~brats_lib.pipeline.Pipeline` of the 2D attention R2U-Net with MTDS: slices
    segmented and stacked in 3D (:func:`predict_case`), each head's mask at 0.5, labels
    nested from the WT / TC-like heads (:func:`labels_from_masks`); the submitted (``final``)
    rule adds the 3D post-processing of Section 3.4."""

    notebook = "attention_r2unet_mtds"
    rows = RUNS

    def train_fold(self, row, fold, train_cases, val_cases, p, out_dir, device=None) -> Trained:
        res = train(row, fold, train_cases, p, out_dir, device)  # no validation: the last epoch is kept
        net = load_final(res, row, p).to(device or "cpu")
        return Trained(row, fold, [net], [res.log], res.train_seconds + res.val_seconds, {"fit": res})

    def probabilities(self, trained, case, p, device=None) -> np.ndarray:
        return predict_case(trained.networks[0], case, p, device)

    def to_labels(self, trained, probs, case, p, final=False) -> np.ndarray:
        return labels_from_masks(masks_from_probabilities(probs, final, p.post_fraction))

    def network_inputs(self, trained, p):
        return [((4, *p.crop), int(np.prod(p.crop)))]
