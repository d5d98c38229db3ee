"""The tables and figures of the Optimized U-Net notebook, from its results, in the order
the notebook shows them (Futrega et al., BraTS 2021, NVIDIA).

* Section 2 - method: :func:`augmentation_table`, :func:`settings_text`.
* Scaling and sizes: :func:`scale_table` (paper vs this run), :func:`model_sizes`
  (parameters and MACs at the paper's size, parameters at the run's).
* Tables 1-3: :func:`fold_table` (per-fold best validation Dice beside the paper's) and
  :func:`detail_table` (per-region Dice and HD95 with confidence intervals, paired tests).
* Section 2.5 searches on the final model's cross-validation predictions
  (:func:`out_of_fold`): :func:`threshold_search`, :func:`voxel_count_search`,
  :func:`search_text`, and their figures :func:`threshold_figure`, :func:`voxel_count_figure`.
* Table 4: :func:`postprocessing_scores` (per case, without / with post-processing) and
  :func:`table4`.
* Figures: :func:`training_curves_figure`, :func:`prediction_figure` (with :func:`dice_text`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from brats_lib import figures as FG
from brats_lib import labels as L
from brats_lib import metrics as M
from brats_lib import statistics as ST
from brats_lib import tables as T
from brats_lib.augmentation import NnUNetAugmentation
from brats_lib.complexity import complexity
from brats_lib.data import LoadedCase
from brats_lib.pipeline import Trained, with_dice_mean

from . import pipeline as OU
from .networks import PAPER_BASE_FILTERS, PAPER_WIDE_FILTERS, variant_filters
from .paper import TABLE4_ROWS, TABLES, paper_table
from .params import OptimizedUNetParams
from .postprocess import remove_small_et


# ------------------------------------------------------------------ method and scale
def augmentation_table(aug: NnUNetAugmentation | None = None) -> pd.DataFrame:
    """The augmentations of Section 2.2 with their probabilities and ranges, read from
    ``aug`` (default: :class:`~brats_lib.augmentation.NnUNetAugmentation`'s defaults)."""
    aug = aug or NnUNetAugmentation()
    return pd.DataFrame([
        ("zoom", aug.zoom_p, f"U{aug.zoom_range}, cubic image / nearest label"),
        ("flip (per axis)", aug.flip_p, "x, y, z independently"),
        ("Gaussian noise", aug.noise_p, f"sd ~ U(0, {aug.noise_sd})"),
        ("Gaussian blur", aug.blur_p, f"sigma ~ U{aug.blur_sigma}"),
        ("brightness", aug.brightness_p, f"x U{aug.brightness_range}"),
        ("contrast", aug.contrast_p, f"x U{aug.contrast_range}, clipped to the patch range"),
    ], columns=["augmentation", "p", "range"])


def settings_text() -> str:
    """One Markdown sentence: the deep-supervision weights of eq. (1), the paper's
    thresholds and its ET post-processing parameters (Section 2.5)."""
    pp = OU.PAPER_POSTPROCESS
    return (f"Deep-supervision weights: {', '.join(f'{w:g}' for w in OU.DS_WEIGHTS)}. "
            f"Paper thresholds WT / TC / ET: {' / '.join(f'{t:g}' for t in OU.PAPER_THRESHOLDS)}; post-processing "
            f"n_c = {pp['min_component']}, n_t = {pp['min_total']}, q = {pp['max_mean_prob']}.")


def _join(values: Sequence, sep: str = " ") -> str:
    """Values as text, ``sep`` between them (``[32, 64]`` -> ``"32 64"``)."""
    return sep.join(map(str, values))


def scale_table(p: OptimizedUNetParams) -> pd.DataFrame:
    """The paper's sizes beside this run's (patch, filters, folds, training length,
    learning rates, flips, data): what the ``cpu`` / ``test`` profiles shrink."""
    data = p.data_dir or f"{p.phantom_cases} phantoms {_join(p.phantom_shape, 'x')}"
    return pd.DataFrame({
        "paper": ["128^3", _join(PAPER_BASE_FILTERS), _join(PAPER_WIDE_FILTERS), "5 of 5",
                  "1000 x (1251 x 4/5 / batch)", "0.0005, 0.0007, 0.0009", "8", "1251 BraTS 2021"],
        "this run": [_join(p.patch_size, "x"), _join(p.base_filters), _join(p.wide_filters), f"{p.folds} of {p.n_folds}",
                     f"{p.epochs} x {p.steps_per_epoch}", ", ".join(f"{lr:g}" for lr in p.learning_rates), str(p.tta),
                     data],
    }, index=["patch / window", "baseline filters (depth 6 in the paper)", "wide filters (depth 7)", "folds trained",
              "epochs x steps", "learning rates", "TTA flips (final model)", "data"])


def model_sizes(p: OptimizedUNetParams, runs: Mapping[str, OU.Run] = OU.RUNS) -> pd.DataFrame:
    """One row per trained row: its network, inputs, the U-Net filters at the paper's size
    (and where the list comes from), parameters (M) and GMACs of one forward pass at 128^3
    (counted on the meta device), and the parameters (M) of the network this run trains."""
    sizes = []
    for name, run in runs.items():
        paper = complexity(run.model, (128, 128, 128), **OU.model_kwargs(run, p, paper_size=True))
        ours = complexity(run.model, tuple(p.patch_size), **OU.model_kwargs(run, p))
        filters = (variant_filters(run.model.removeprefix("optimized_unet").lstrip("_") or "final")
                   if run.model.startswith("optimized_unet") else None)
        sizes.append({"row": name, "network": run.model, "inputs": run.in_channels,
                      "filters at paper size": _join(filters) if filters else "",
                      "filters from": ("inferred (the paper names no list)" if name in ("Deeper", "Channels")
                                       else "NVIDIA's code" if filters else ""),
                      "params (M), paper size": paper["params"] / 1e6, "GMACs at 128^3": paper["macs"] / 1e9,
                      "params (M), this run": ours["params"] / 1e6})
    return pd.DataFrame(sizes).set_index("row")


# ------------------------------------------------------------------ Tables 1-3
def fold_table(table: str, best: Mapping[tuple[str, int], float], n_folds: int) -> pd.DataFrame:
    """Table ``table`` (1-3) as the paper prints it: per row, the best validation mean Dice
    of each fold (``best[row, fold]``) and their mean, each beside the paper's, then the
    mean the paper printed."""
    folds = [f"Fold {k}" for k in range(n_folds)]
    ours = {}
    for label, key in TABLES[table]:
        scores = [best[key, k] for k in range(n_folds)]
        ours[label] = {**dict(zip(folds, scores)), "Mean": float(np.mean(scores))}
    paper = paper_table(table).rename(columns={"Mean of folds": "Mean"})
    both = T.paper_vs_ours(pd.DataFrame(ours).T, paper, folds + ["Mean"])
    both.insert(len(both.columns) - 1, "Mean (paper, printed)", paper["Mean (printed)"].reindex(both.index))
    return both


def detail_table(table: str, per_case: pd.DataFrame, sizes: pd.DataFrame) -> pd.DataFrame:
    """Per row of ``table``: Dice and HD95 of each region and the mean Dice over its
    cross-validation cases (mean [95 % CI], :func:`~brats_lib.statistics.ci_table`), the
    parameters of this run's network, and the Wilcoxon p-value of the per-case mean Dice
    against the table's first row."""
    rows = dict(TABLES[table])
    columns = [f"Dice {r}" for r in L.REGIONS] + [f"HD95 {r}" for r in L.REGIONS] + ["Dice mean"]
    base = TABLES[table][0][0]
    out = ST.ci_table(per_case, rows, columns, base=base, digits={f"HD95 {r}": 1 for r in L.REGIONS})
    out.insert(len(columns), "params (M)", [f"{sizes.loc[key, 'params (M), this run']:.3f}" for key in rows.values()])
    return out


# ------------------------------------------------------------------ Section 2.5 searches
@dataclass
class OutOfFold:
    """The final model's cross-validation predictions in case-id order: probabilities,
    references, folds, and the labels at the paper's thresholds (no post-processing)."""

    ids: list[str]
    probs: list[np.ndarray]
    refs: list[np.ndarray]
    folds: list[int]
    labels: list[np.ndarray]


def out_of_fold(oof: Mapping[str, tuple[np.ndarray, np.ndarray, int]], p: OptimizedUNetParams) -> OutOfFold:
    """:class:`OutOfFold` from :attr:`~.pipeline.CrossValidation.oof` (case id ->
    (probabilities, reference, fold))."""
    ids = sorted(oof)
    probs = [oof[c][0] for c in ids]
    return OutOfFold(ids, probs, [oof[c][1] for c in ids], [oof[c][2] for c in ids],
                     [OU.to_labels(pr, OU.PAPER_THRESHOLDS, p) for pr in probs])


def threshold_search(oof: OutOfFold, p: OptimizedUNetParams) -> tuple[pd.DataFrame, tuple[float, float, float]]:
    """(:func:`~.pipeline.threshold_grid` over ``p.threshold_grid``, the WT, TC, ET
    thresholds it picks)."""
    grid = OU.threshold_grid(oof.probs, oof.refs, p.threshold_grid, label_rule=p.label_rule)
    return grid, OU.best_thresholds(grid)


def voxel_count_search(oof: OutOfFold, p: OptimizedUNetParams) -> tuple[pd.DataFrame, int]:
    """(mean ET Dice for each ``n_t`` of ``p.min_total_grid`` (:func:`~.pipeline.min_total_search`,
    the paper's other post-processing values), the best ``n_t`` (the smallest among ties))."""
    pp = OU.PAPER_POSTPROCESS
    counts = OU.min_total_search(oof.labels, oof.probs, oof.refs, p.min_total_grid, pp["min_component"],
                                 pp["max_mean_prob"])
    return counts, int(counts["ET Dice"].idxmax())


def search_text(chosen: Sequence[float], best_n: int) -> str:
    """One Markdown sentence: the searched thresholds and ``n_t`` beside the paper's."""
    return (f"Best thresholds here (WT / TC / ET): {' / '.join(f'{t:g}' for t in chosen)}; paper: "
            f"{' / '.join(f'{t:g}' for t in OU.PAPER_THRESHOLDS)}. Best n_t here: {best_n}; "
            f"paper: {OU.PAPER_POSTPROCESS['min_total']}.")


def threshold_figure(grid: pd.DataFrame):
    """Heat map of a :func:`~.pipeline.threshold_grid` table: mean Dice of each region
    (rows) at each of its thresholds (columns), the values written in the cells."""
    import matplotlib.pyplot as plt

    values = grid.values.astype(float)
    fig, ax = plt.subplots(figsize=(1 + 0.7 * grid.shape[1], 2.6))
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set(xticks=range(grid.shape[1]), xticklabels=grid.columns, yticks=range(3), yticklabels=grid.index,
           xlabel="threshold of the region", title="mean Dice of the region (D+C+O, cross-validation)")
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w" if v < np.nanmean(values) else "k")
    fig.colorbar(im, ax=ax)
    return fig


def voxel_count_figure(counts: pd.DataFrame, best_n: int):
    """Mean ET Dice against ``n_t`` (:func:`voxel_count_search`), the paper's and the best
    value marked."""
    import matplotlib.pyplot as plt

    paper_n = OU.PAPER_POSTPROCESS["min_total"]
    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.plot(counts.index, counts["ET Dice"], marker=".")
    ax.axvline(paper_n, color="grey", ls="--", label=f"paper: {paper_n}")
    ax.axvline(best_n, color="C3", ls=":", label=f"best here: {best_n}")
    ax.set(xlabel="n_t (ET voxels)", ylabel="mean ET Dice", title="post-processing voxel-count search")
    ax.legend(fontsize=8)
    return fig


# ------------------------------------------------------------------ Table 4
def postprocessing_scores(oof: OutOfFold, cases: Mapping[str, LoadedCase]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each cross-validation case of the final model without and with the ET
    post-processing (paper thresholds and rule). Returns (one line per case: fold, mean
    Dice ``without`` / ``with`` and the ET Dice of each; the long per-case table of
    :func:`~brats_lib.metrics.case_scores`, rows :data:`~.paper.TABLE4_ROWS`, for the claims)."""
    short, long = [], []
    for c, lab, pr, ref, k in zip(oof.ids, oof.labels, oof.probs, oof.refs, oof.folds):
        with_pp = remove_small_et(lab, pr, **OU.PAPER_POSTPROCESS)
        for row, labels in zip(TABLE4_ROWS, (lab, with_pp)):
            long.append({"row": row, "fold": k, "case": c, **M.case_scores(labels, ref, cases[c].spacing)})
        d0, d1 = OU.region_dice(lab, ref), OU.region_dice(with_pp, ref)
        short.append({"case": c, "fold": k, "without": np.mean(list(d0.values())), "with": np.mean(list(d1.values())),
                      "ET without": d0["ET"], "ET with": d1["ET"]})
    return pd.DataFrame(short), with_dice_mean(pd.DataFrame(long))


def table4(scores: pd.DataFrame) -> pd.DataFrame:
    """Table 4 from :func:`postprocessing_scores`' per-case lines: the mean Dice without and
    with post-processing per fold and overall, beside the paper's, and the Wilcoxon p-value
    of with vs without over the cases."""
    ours = scores.groupby("fold")[["without", "with"]].mean().T
    ours.columns = [f"Fold {k}" for k in ours.columns]
    ours["Mean"] = scores[["without", "with"]].mean()
    paper = paper_table("table4").rename(columns={"Mean of folds": "Mean"})
    out = T.paper_vs_ours(ours, paper, list(ours.columns))
    out["p (Wilcoxon, with vs without)"] = ["", f"{ST.paired_test(scores['with'], scores['without']):.3g}"]
    return out


# ------------------------------------------------------------------ figures
def training_curves_figure(trained: Mapping[tuple[str, int], Trained], rows: Sequence[str], fold: int = 0):
    """Training loss and validation mean Dice per epoch of every row on ``fold``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for i, name in enumerate(rows):
        log = trained[name, fold].state["fit"].log
        axes[0].plot(log["epoch"], log["train_loss"], marker=".", label=name, color=plt.cm.tab20(i))
        axes[1].plot(log["epoch"], log["val_dice_mean"], marker="o", label=name, color=plt.cm.tab20(i))
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel="validation mean Dice")
    axes[1].legend(fontsize=7, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def dice_text(labels: np.ndarray, ref: np.ndarray) -> str:
    """``"ET 0.81, TC 0.85, WT 0.90"``: each region's Dice of ``labels`` against ``ref``."""
    return ", ".join(f"{r} {v:.2f}" for r, v in OU.region_dice(labels, ref).items())


def prediction_figure(lc: LoadedCase, labels: np.ndarray, title: str):
    """FLAIR, the reference and the final model's prediction on the slice with most
    tumour (as the paper's Fig. 7; :func:`brats_lib.figures.prediction_figure`)."""
    return FG.prediction_figure(lc.image, lc.label, {"prediction (D+C+O)": labels}, title)
