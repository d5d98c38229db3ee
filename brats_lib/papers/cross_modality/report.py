"""The cross-modality notebook's results as the paper's tables and figures, in the
notebook's order.

* Setup: :func:`run_summary`, :func:`scale_table` (the paper's setup beside this run's),
  :func:`model_sizes` and :func:`discriminator_check` (Table 1's count).
* Phase 1: :func:`pretraining_times`, :func:`pretraining_figure`, :func:`shapes_figure` (the
  stand-in for PASCAL VOC), :func:`translate_case` -> :class:`Translation` ->
  :func:`translation_figure`, :func:`translation_error`.
* Phase 2: :func:`paper_columns` (the per-case table in the paper's terms), :func:`row_means`,
  :func:`paper_tables` / :func:`shown_tables` (Tables 2 and 4 beside ours),
  :func:`region_table` (intervals and paired tests), :func:`with_paper_verdicts` (the claims
  read in the paper's own tables), :func:`inference_times`.
* Figures of phase 2: :func:`cmff_training_figure`, :func:`branch_masks_figure`,
  :func:`qualitative_figure`.
* Time: :func:`pretrain_seconds`, :func:`row_seconds`, :func:`manifest_seconds`.

``pretrained`` is :func:`~brats_lib.papers.cross_modality.pipeline.pretrain_folds`' result
(``{(kind, pairing, fold): Pretrained}``), ``trained`` and ``per_case``
:func:`brats_lib.pipeline.cross_validate`'s (``{(row, fold): Trained}``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from brats_lib import figures as FG, labels as L, metrics as M, statistics as ST, tables as T
from brats_lib.claims import Claim
from brats_lib.complexity import complexity
from brats_lib.data import MODALITIES, LoadedCase
from brats_lib.pipeline import Trained
from . import pipeline as CM
from .networks import PAPER_DISC_FILTERS, PAPER_FEATURES
from .paper import (CLAIMS, COLUMNS, METRICS, PAPER_BATCH, PAPER_DATA, PAPER_LAMBDA, PAPER_LR, PAPER_PATCH,
                    PAPER_TABLES, PAPER_TRAINING, REGIONS, TABLE1_DISCRIMINATOR_PARAMS, TABLE_TITLES, holds_in)
from .params import CrossModalityParams

Device = torch.device | str | None
#: the rows of Tables 2 and 4 in the paper's order, then the alternative pairing
ORDER = [r.label for r in CM.TABLE_ROWS]
#: the networks of the model-size table: (name, registered model, its arguments)
SIZE_ROWS = [("generator G (Fig. 3)", "cmft_generator", {"in_channels": 2}),
             ("discriminator D (Table 1)", "cmft_discriminator", {"in_channels": 2}),
             ("branch S_A / S_B", "cmff_branch", {"in_channels": 4}),
             ("CMFF, mask-guided (Ours)", "cmff", {"in_channels": 4, "attention": "mg"}),
             ("CMFF w CA", "cmff", {"in_channels": 4, "attention": "ca"}),
             ("CMFF w/o MG", "cmff", {"in_channels": 4, "attention": "none"})]
#: per-region columns whose paired test against *Ours* the per-region table gives
TESTED = ("Dice ET", "Dice WT", "Dice TC", "Dice Average", "Hausdorff95 Average")
#: the rows of the overlay figure (Fig. 7)
SHOWN_ROWS = ("S_A", "S_B", "S_A + S_B", "Ours w/o MG", "Ours_random", "Ours")


def _smooth(values: pd.Series, window: int = 5) -> pd.Series:
    """A per-step loss as the figures draw it: the mean of the last ``window`` steps."""
    return values.rolling(window, min_periods=1).mean()


# ------------------------------------------------------------------ setup
def run_summary(p: CrossModalityParams) -> str:
    """One sentence: this run's modality pairs, cycle weight, window overlap and flips."""
    pa, pb = CM.PAIRINGS["paper"]
    return (f"Pairs of this run: A = ({', '.join(pa)}), B = ({', '.join(pb)}); lambda = {p.cycle_lambda:g} "
            f"(paper {PAPER_LAMBDA:g}); sliding-window overlap {p.overlap:g}, TTA flips: {p.tta or 'none'}.")


def scale_table(p: CrossModalityParams) -> pd.DataFrame:
    """Section 4.1's setup beside this run's: patch, filters, batch, optimisers, training
    length and data."""
    shape = T.shape_text
    return pd.DataFrame({
        "paper": [shape(PAPER_PATCH), shape(PAPER_FEATURES), str(PAPER_BATCH), f"Adam {PAPER_LR:g}",
                  f"Adam {PAPER_LR:g}", PAPER_TRAINING, PAPER_DATA],
        "this run": [shape(p.patch_size), shape(p.features), str(p.batch_size), f"Adam {p.cmft_lr:g}",
                     f"Adam {p.cmff_lr:g}",
                     f"CMFT {p.cmft_epochs} x {p.steps_per_epoch} steps, each row {p.cmff_epochs} x {p.steps_per_epoch}",
                     p.data_dir or f"{p.phantom_cases} phantoms {shape(p.phantom_shape)}, {p.folds} of {p.n_folds} folds"],
    }, index=["patch", "U-Net filters", "batch", "CMFT optimiser", "CMFF optimiser", "training length", "data"])


def model_sizes(p: CrossModalityParams) -> pd.DataFrame:
    """Parameters and GMACs of :data:`SIZE_ROWS` for one patch at the paper's size and
    widths, and their parameters at this run's widths (the discriminator has no width)."""
    sizes = []
    for name, reg, kw in SIZE_ROWS:
        paper = complexity(reg, tuple(PAPER_PATCH), **kw)
        widths = {} if reg == "cmft_discriminator" else {"features": p.features}
        this = complexity(reg, tuple(p.patch_size), **kw, **widths)
        sizes.append({"network": name, "params": paper["params"], "GMACs per 128^3 patch": paper["macs"] / 1e9,
                      "params, this run": this["params"]})
    return pd.DataFrame(sizes).set_index("network")


def discriminator_check(sizes: pd.DataFrame) -> str:
    """Whether the discriminator's parameters (:func:`model_sizes`) are Table 1's count."""
    disc = int(sizes.loc["discriminator D (Table 1)", "params"])
    verdict = "as" if disc == TABLE1_DISCRIMINATOR_PARAMS else "NOT as"
    return (f"Discriminator: {disc:,} parameters with filters {T.shape_text(PAPER_DISC_FILTERS)}, 1 "
            f"({verdict} the issue's count from Table 1, {TABLE1_DISCRIMINATOR_PARAMS:,}).")


# ------------------------------------------------------------------ phase 1
def pretrain_seconds(pretrained: Mapping[tuple[str, str, int], CM.Pretrained]) -> dict[str, float]:
    """Wall time of each pre-training that trains (not ``random``): ``"<kind>-<pairing>/fold<k>"``."""
    return {f"{kind}-{pairing}/fold{k}": v.seconds for (kind, pairing, k), v in pretrained.items() if kind != "random"}


def pretraining_times(pretrained: Mapping[tuple[str, str, int], CM.Pretrained]) -> pd.DataFrame:
    """The same times as a table: pre-training (and its pairs), fold, seconds."""
    return pd.DataFrame([{"pre-training": f"{kind} ({pairing} pairs)", "fold": k, "seconds": v.seconds}
                         for (kind, pairing, k), v in pretrained.items() if kind != "random"])


def pretraining_figure(pretrained: Mapping[tuple[str, str, int], CM.Pretrained], fold: int = 0):
    """Per-step losses of one fold's pre-trainings: CMFT with both pairings (Eqs. 2-4),
    Ours_self's reconstruction, and Ours_voc's 2D cross-entropy per epoch."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.4))
    for ax, pairing in zip(axes[:2], ("paper", "alternative")):
        h = pretrained["cmft", pairing, fold].history
        for col in h.columns:
            ax.plot(h.index, _smooth(h[col]), label=col)
        ax.set(title=f"CMFT, {pairing} pairs (fold {fold})", xlabel="step", ylabel="loss (5-step mean)")
        ax.legend(fontsize=8)
    h = pretrained["self", "paper", fold].history
    axes[2].plot(h.index, _smooth(h.iloc[:, 0]))
    axes[2].set(title="Ours_self: reconstruction", xlabel="step", ylabel="L1 (5-step mean)")
    h = pretrained["voc2d", "paper", fold].history
    axes[3].plot(h["epoch"], h.iloc[:, 1], "o-")
    axes[3].set(title="Ours_voc: 2D shapes segmentation", xlabel="epoch", ylabel="cross-entropy")
    fig.tight_layout()
    return fig


def shapes_figure(p: CrossModalityParams, images: int = 4):
    """``images`` training images of Ours_voc's 2D pre-training (the stand-in for PASCAL
    VOC, drawn from ``p.seed``) above their labels."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(p.seed)
    fig, axes = plt.subplots(2, images, figsize=(2.5 * images, 5))
    for j in range(images):
        img, lab = CM.shapes_image(p.patch_size[:2], rng)
        rgb = img.transpose(1, 2, 0)
        axes[0, j].imshow((rgb - rgb.min()) / (np.ptp(rgb) + 1e-6))
        axes[1, j].imshow(lab, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
        for ax in axes[:, j]:
            ax.axis("off")
    axes[0, 0].set_title("RGB input", fontsize=9)
    axes[1, 0].set_title("labels: " + ", ".join(CM.SHAPE_CLASSES[1:]), fontsize=9)
    fig.tight_layout()
    return fig


@dataclass
class Translation:
    """Both CMFT generators over one case (cropped to the brain, z-scored)."""

    case_id: str
    #: the four real modalities (4, x, y, z)
    image: np.ndarray
    #: G_B^A(A), the generated pair B, and G_A^B(B), the generated pair A (2, x, y, z)
    fake_b: np.ndarray
    fake_a: np.ndarray
    #: channels of pairs A and B in ``image``
    pair_a: tuple[int, int]
    pair_b: tuple[int, int]
    #: the axial slice with the most tumour
    z: int


def translate_case(pre: CM.Pretrained, lc: LoadedCase, p: CrossModalityParams, device: Device = None,
                   pairing: str = "paper") -> Translation:
    """Run a CMFT pre-training's generators over a whole case (sliding window):
    ``pre.g_a`` on pair A, ``pre.g_b`` on pair B."""
    ia, ib = CM.pair_indices(pairing)
    x, fake_b = CM.translate(pre.g_a, lc, ia, p, device)
    _, fake_a = CM.translate(pre.g_b, lc, ib, p, device)
    box = CM.network_input(lc)[1]
    return Translation(lc.case_id, x, fake_b, fake_a, ia, ib, FG.tumour_slice(lc.label[box.slices]))


def translation_figure(tr: Translation):
    """Two rows, A -> B and B -> A: the real input pair, the generated pair, the real target pair."""
    import matplotlib.pyplot as plt

    x, names = tr.image, MODALITIES
    fig, axes = plt.subplots(2, 6, figsize=(15, 5.4))
    directions = [(tr.pair_a, "A", tr.pair_b, "B", tr.fake_b), (tr.pair_b, "B", tr.pair_a, "A", tr.fake_a)]
    for i, (src, s, dst, d, fake) in enumerate(directions):
        panels = ([(f"real {names[c]} ({s})", x[c]) for c in src]
                  + [(f"G({s}): fake {names[c]}", fake[j]) for j, c in enumerate(dst)]
                  + [(f"real {names[c]} ({d})", x[c]) for c in dst])
        for j, (title, vol) in enumerate(panels):
            axes[i, j].imshow(vol[..., tr.z].T, cmap="gray", origin="lower", vmin=-2.5, vmax=3.5)
            axes[i, j].set_title(title, fontsize=9)
            axes[i, j].axis("off")
    fig.suptitle(f"{tr.case_id}, slice {tr.z}: A -> B (top), B -> A (bottom)")
    fig.tight_layout()
    return fig


def translation_error(tr: Translation) -> pd.DataFrame:
    """Mean absolute error of each generated pair against the real one, beside the error
    of taking the input pair itself as the target (what translating has to beat)."""
    a, b = tr.image[list(tr.pair_a)], tr.image[list(tr.pair_b)]
    return pd.DataFrame({
        "mean |fake - real| (z-score units)": [float(np.abs(tr.fake_b - b).mean()), float(np.abs(tr.fake_a - a).mean())],
        "mean |input - real target|": [float(np.abs(a - b).mean()), float(np.abs(b - a).mean())],
    }, index=["A -> B", "B -> A"])


# ------------------------------------------------------------------ phase 2: Tables 2 and 4
def paper_columns(per_case: pd.DataFrame) -> pd.DataFrame:
    """The per-case table in the paper's terms: HD95 named "Hausdorff95", the average of
    ET, WT and TC of each metric (``"Dice Average"`` ...), no ``"Dice mean"``."""
    out = per_case.drop(columns="Dice mean", errors="ignore")
    out = out.rename(columns=lambda c: c.replace("HD95", "Hausdorff95"))
    for met in METRICS:
        out[f"{met} Average"] = out[[f"{met} {r}" for r in REGIONS]].mean(axis=1)
    return out


def row_means(per_case: pd.DataFrame) -> pd.DataFrame:
    """Our Tables 2 and 4: each row's mean over its validation cases, in the paper's order."""
    return per_case.groupby("row")[COLUMNS].mean().reindex(ORDER)


def paper_tables(ours: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``{"table2": ..., "table4": ...}``: every column of the paper's table beside ours."""
    return {name: T.paper_vs_ours(ours, paper, COLUMNS) for name, paper in PAPER_TABLES.items()}


def shown_tables(ours: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables as the notebook shows them (caption -> table): Table 2's Dice columns,
    Table 4's sensitivity and HD95 columns."""
    dice = [c for c in COLUMNS if c.startswith("Dice")]
    other = [c for c in COLUMNS if not c.startswith("Dice")]
    return {f"**{TABLE_TITLES['table2']}**, Dice columns; the saved table has every column.":
            T.paper_vs_ours(ours, PAPER_TABLES["table2"], dice),
            f"**{TABLE_TITLES['table4']}**, sensitivity and HD95 columns.":
            T.paper_vs_ours(ours, PAPER_TABLES["table4"], other)}


def region_table(per_case: pd.DataFrame, reference: str = "Ours") -> pd.DataFrame:
    """Every column of Tables 2 and 4 per row as mean [95 % bootstrap interval], and the
    Wilcoxon p-values of the :data:`TESTED` columns against ``reference``, case by case."""
    ref = per_case[per_case.row == reference].set_index(["fold", "case"])
    detail = {}
    for lab in ORDER:
        d = per_case[per_case.row == lab].set_index(["fold", "case"])
        row = {c: ST.format_ci(d[c], digits=3) for c in COLUMNS}
        for c in TESTED:
            row[f"p {c} vs {reference}"] = ("" if lab == reference
                                           else f"{ST.paired_test(d[c], ref[c].reindex(d.index)):.3g}")
        detail[lab] = row
    return pd.DataFrame(detail).T


def with_paper_verdicts(checked: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """:func:`brats_lib.claims.check_claims`' table with whether each claim holds in the
    paper's own Table 2 (BraTS 2017) and Table 4 (BraTS 2018) means (columns 5 and 6)."""
    checked.insert(4, "BraTS 2017 (paper)", [holds_in(PAPER_TABLES["table2"], c) for c in claims])
    checked.insert(5, "BraTS 2018 (paper)", [holds_in(PAPER_TABLES["table4"], c) for c in claims])
    return checked


def inference_times(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean and longest prediction time per validation case of each row."""
    timing = per_case.groupby("row")["seconds"].agg(["mean", "max"]).reindex(ORDER)
    timing.columns = ["mean s / case", "max s / case"]
    return timing


# ------------------------------------------------------------------ phase 2: figures
def cmff_training_figure(trained: Mapping[tuple[str, int], Trained], fold: int = 0):
    """Per-step Dice losses of one fold: S_F of every fusion row (left); the three terms
    of Eq. 7 for *Ours* beside S_A and S_B trained alone (right)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6))
    for r in CM.TABLE_ROWS:
        if r.model == "fusion" and not r.trained_as:
            h = trained[r.label, fold].state["history"]
            axes[0].plot(h.index, _smooth(h["Dice loss S_F"]), label=r.label)
    axes[0].set(title="S_F of every fusion row", xlabel="step", ylabel="Dice loss (5-step mean)")
    axes[0].legend(fontsize=7)
    h = trained["Ours", fold].state["history"]
    for col in h.columns:
        axes[1].plot(h.index, _smooth(h[col]), label=col)
    for lab in ("S_A", "S_B"):
        hb = trained[lab, fold].state["history"]
        axes[1].plot(hb.index, _smooth(hb.iloc[:, 0]), "--", label=f"{lab} trained alone")
    axes[1].set(title="Ours: the three terms of Eq. 7", xlabel="step", ylabel="Dice loss (5-step mean)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def branch_masks_figure(net: torch.nn.Module, lc: LoadedCase, p: CrossModalityParams, device: Device = None):
    """A fusion network on one case: the reference, S_A, S_B and S_F (with their WT Dice),
    and the tumour masks M_A, M_B that guide the fusion, on the slice with most tumour."""
    import matplotlib.pyplot as plt

    bp = CM.branch_predictions(net, lc, p, device)
    z = FG.tumour_slice(bp["label"])
    flair = bp["image"][MODALITIES.index("flair")]
    fig, axes = plt.subplots(1, 6, figsize=(17, 3.2))
    FG.overlay(axes[0], flair[..., z], bp["label"][..., z], "reference")
    for ax, key in zip(axes[1:4], ("S_A", "S_B", "S_F")):
        d = M.dice(L.region_mask(bp[key], "WT"), L.region_mask(bp["label"], "WT"))
        FG.overlay(ax, flair[..., z], bp[key][..., z].astype(np.uint8), f"{key}: WT Dice {d:.2f}")
    for ax, key in zip(axes[4:], ("M_A", "M_B")):
        im = ax.imshow(bp[key][..., z].T, cmap="magma", origin="lower", vmin=0, vmax=1)
        ax.set_title(f"mask {key}")
        ax.axis("off")
    fig.colorbar(im, ax=axes[4:], fraction=0.03)
    fig.legend(handles=FG.legend_handles(), loc="lower center", ncol=4, fontsize=8)
    return fig


def qualitative_figure(trained: Mapping[tuple[str, int], Trained], fold: int, lc: LoadedCase, title: str,
                       p: CrossModalityParams, device: Device = None, overlap: float | None = None):
    """Fig. 7: one case segmented by each of :data:`SHOWN_ROWS` (trained on ``fold``),
    beside the reference, on FLAIR's slice with most tumour, with each row's mean Dice;
    ``overlap`` replaces ``p.overlap`` (large real cases)."""
    import matplotlib.pyplot as plt

    ref = lc.label if lc.label is not None and lc.label.any() else np.zeros(lc.image.shape[1:])
    z = FG.tumour_slice(ref)
    flair = lc.image[MODALITIES.index("flair")]
    fig, axes = plt.subplots(1, len(SHOWN_ROWS) + 1, figsize=(2.8 * (len(SHOWN_ROWS) + 1), 3.3))
    FG.overlay(axes[0], flair[..., z], lc.label[..., z], "reference")
    for ax, lab in zip(axes[1:], SHOWN_ROWS):
        pred = CM.predict(CM.networks(trained[lab, fold]), lc, p, device, overlap=overlap)
        d = np.mean([M.dice(L.region_mask(pred, r), L.region_mask(lc.label, r)) for r in L.REGIONS])
        FG.overlay(ax, flair[..., z], pred[..., z], f"{lab}\nmean Dice {d:.2f}")
    fig.legend(handles=FG.legend_handles(), loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# ------------------------------------------------------------------ time
def row_seconds(trained: Mapping[tuple[str, int], Trained]) -> dict[str, float]:
    """Phase-2 wall time of each trained row and fold (``"<row>/fold<k>"``); rows made of
    other rows' networks (S_A + S_B) are left out."""
    return {f"{lab}/fold{k}": t.state["cmff_seconds"] for (lab, k), t in trained.items()
            if not CM.ROWS[lab].trained_as}


def manifest_seconds(pretrained: Mapping[tuple[str, str, int], CM.Pretrained],
                     trained: Mapping[tuple[str, int], Trained]) -> dict[str, dict[str, float]]:
    """The manifest's ``pretrain_seconds`` and ``train_seconds`` (rounded to 0.1 s)."""
    return {"pretrain_seconds": {k: round(v, 1) for k, v in pretrain_seconds(pretrained).items()},
            "train_seconds": {k: round(v, 1) for k, v in row_seconds(trained).items()}}
